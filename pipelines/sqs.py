"""Draining an Amazon SQS queue (SES notifications, bare or SNS-wrapped) into the archive.

Each received message body becomes one line in the archive, written with the
collector's durable writer (:class:`~pipelines.collector.archive.ArchiveWriter`:
fsynced, published as ``.json.gz`` within ``rotate_seconds``) under provider ``ses``.
A message is deleted from the queue only after its line is on disk:

- local archive: the line is fsynced in an open file, which is published by rotation,
  by ``close()`` at the end, or -- after a ``kill -9`` -- by the recovery sweep of the
  next ``drain-sqs`` or ``serve`` on the same directory;
- ``s3://`` / ``gs://`` archive: the same, in the local spool; published files are
  shipped, and a failed upload stays in the spool and is retried.

A ``kill -9`` between the fsync and the delete leaves a message that is archived and
still in the queue: it is received again after its visibility timeout and archived a
second time, and the load drops the copy by ``event_id``. Nothing is deleted that is
not durable, so nothing is lost.

Bodies are stored so that each is exactly one line and can be recovered:

- JSON (an SES notification or event, an SNS envelope with raw message delivery off):
  :func:`~pipelines.collector.archive.compact_line` (line breaks and the whitespace around
  them removed, nothing else changed; a one-line body is stored byte-exact);
- anything else on one line: as received (the load records it as a dead letter, with
  the raw text);
- anything else spanning lines (or blank): as a JSON string literal, so
  ``json.loads(line)`` gives the body back exactly; the load records it as a dead letter.

Polling and retrying are separate (as in google-api-core): :class:`DrainPolicy` says how
long to long-poll and how to back off after a transient receive error (a
:class:`~pipelines.backoff.Backoff`, :data:`RECEIVE_BACKOFF`); botocore's
standard retry mode retries throttling and 5xx within each call.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .backoff import Backoff
from .collector.archive import ArchiveError, ArchiveWriter, compact_line
from .records import parse_json

log = logging.getLogger("mailpulse.sqs")

PROVIDER = "ses"
MAX_BATCH = 10  # SQS's limit for ReceiveMessage and DeleteMessageBatch
MAX_WAIT_SECONDS = 20  # SQS's limit for long polling

_REGION_IN_URL = re.compile(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", re.I)


class DrainError(Exception):
    """Draining cannot go on; the message says what to fix. Nothing undurable was deleted."""


#: Waiting after a receive that failed for a transient reason (the endpoint unreachable,
#: while following): 1 s doubling to 30 s, for as long as it takes; reset by a receive
#: that works.
RECEIVE_BACKOFF = Backoff(initial=1.0, maximum=30.0, multiplier=2.0)


@dataclass(frozen=True)
class DrainPolicy:
    """How ``drain-sqs`` polls. ``wait_seconds``: long polling while following;
    ``empty_wait_seconds``: the long poll that decides the queue is empty (without
    ``--follow``; at least 1 so that every SQS server is asked); ``receive_backoff``:
    waiting after a receive that failed for a transient reason (a :class:`Backoff`;
    given ``attempts`` or a ``deadline``, draining stops with :class:`DrainError` once
    it is used up)."""

    wait_seconds: int = MAX_WAIT_SECONDS
    empty_wait_seconds: int = 2
    receive_backoff: Backoff = RECEIVE_BACKOFF
    backlog_interval: float = 30.0  # how often failed uploads are retried


DEFAULT_POLICY = DrainPolicy()


@dataclass
class DrainStats:
    queue_url: str
    archive: str
    received: int = 0
    archived: int = 0
    deleted: int = 0
    delete_failures: int = 0
    not_json: int = 0
    batches: int = 0
    files_published: int = 0
    unshipped_files: int = 0
    seconds: float = 0.0
    stopped_by: str = "empty"
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


def archive_line(body: str) -> tuple[bytes, bool]:
    """(the archive line for a message body, whether it is JSON)."""
    raw = body.encode("utf-8", "surrogatepass")
    _, err = parse_json(raw)
    if err is None:
        return compact_line(raw), True
    if raw.strip() and b"\n" not in raw and b"\r" not in raw:
        return raw, False
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"), False


def region_for(queue_url: str, environ) -> str | None:
    """AWS_REGION / AWS_DEFAULT_REGION, else the region in an AWS queue URL."""
    for k in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if environ.get(k):
            return environ[k]
    m = _REGION_IN_URL.match(queue_url)
    return m.group(1) if m else None


def sqs_client(queue_url: str, environ):
    """A boto3 SQS client from the standard credential chain (``AWS_*`` variables incl.
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SQS``, ``AWS_PROFILE``, instance roles).
    Raises DrainError naming the fix when boto3, a region or credentials are missing."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise DrainError(
            "drain-sqs needs boto3: pip install 'apache-beam[aws]==2.77.0' "
            "(or reinstall mailpulse: pip install -e .)"
        ) from None
    region = region_for(queue_url, environ)
    if region is None:
        raise DrainError(
            f"cannot tell the AWS region of {queue_url}: set AWS_REGION (e.g. AWS_REGION=us-east-1)"
        )
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise DrainError(
            "no AWS credentials found for SQS: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role); "
            "for a local SQS server also set AWS_ENDPOINT_URL"
        )
    # read timeout above the long poll; standard retries for throttling and 5xx
    return session.client(
        "sqs",
        config=Config(
            retries={"mode": "standard", "max_attempts": 5},
            read_timeout=MAX_WAIT_SECONDS + 10,
            connect_timeout=10,
        ),
    )


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    return isinstance(
        exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)
    )


def _explain(exc: BaseException, queue_url: str) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            return f"the queue {queue_url} does not exist: check --queue-url (and AWS_REGION)"
        if code in (
            "AccessDenied",
            "AccessDeniedException",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "ExpiredToken",
        ):
            return (
                f"SQS refused the credentials ({code}): they need sqs:ReceiveMessage, "
                f"sqs:DeleteMessage and sqs:ChangeMessageVisibility on {queue_url}"
            )
        return f"SQS answered {code or exc}: check --queue-url and the credentials"
    if _is_transient(exc):
        return (
            "the SQS endpoint cannot be reached: check the network, AWS_REGION and AWS_ENDPOINT_URL"
        )
    return f"{type(exc).__name__}: {exc}"


class SqsDrainer:
    """Receive -> archive (fsync) -> delete, batch by batch.

    ``stop`` ends the loop after the current batch (SIGTERM). ``sleep(seconds, stop)``
    and ``clock()`` (monotonic seconds) are injected in tests.
    """

    def __init__(
        self,
        client,
        queue_url: str,
        writer: ArchiveWriter,
        archive: str,
        *,
        follow: bool = False,
        policy: DrainPolicy = DEFAULT_POLICY,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float, threading.Event], None] | None = None,
        on_batch: Callable[[DrainStats], None] | None = None,
    ):
        self.client, self.queue_url, self.writer = client, queue_url, writer
        self.follow, self.policy = follow, policy
        self.stop = stop or threading.Event()
        self.clock = clock
        self.sleep = sleep or (lambda s, ev: ev.wait(s))
        self.on_batch = on_batch or (lambda stats: None)
        self.stats = DrainStats(queue_url=queue_url, archive=archive)
        previous = writer.on_event

        def on_event(name: str, n: int) -> None:
            if name == "archive_files_closed":
                self.stats.files_published += n
            previous(name, n)

        writer.on_event = on_event

    def run(self) -> DrainStats:
        start = self.clock()
        next_backlog = start + self.policy.backlog_interval
        delays = self.policy.receive_backoff.delays()
        failing_since: float | None = None
        try:
            while not self.stop.is_set():
                wait = self.policy.wait_seconds if self.follow else self.policy.empty_wait_seconds
                due = self.writer.seconds_until_due()
                if due is not None and due < wait:  # come back in time to publish
                    wait = int(due)
                try:
                    msgs = self._receive(wait)
                except DrainError:
                    raise
                except Exception as exc:  # noqa: BLE001 - sorted into transient / fatal below
                    if not (self.follow and _is_transient(exc)):
                        raise DrainError(
                            f"receiving from the queue failed: {_explain(exc, self.queue_url)}"
                        ) from exc
                    now = self.clock()
                    failing_since = now if failing_since is None else failing_since
                    backoff = self.policy.receive_backoff
                    delay = next(delays, None)
                    if delay is not None and backoff.deadline is not None:
                        if now + delay > failing_since + backoff.deadline:
                            delay = None
                    if delay is None:
                        raise DrainError(
                            f"receiving from the queue kept failing for "
                            f"{now - failing_since:.0f} s (DrainPolicy.receive_backoff "
                            f"used up): {_explain(exc, self.queue_url)}"
                        ) from exc
                    log.warning(
                        "receiving from the queue failed (retrying in %.0f s): %s",
                        delay,
                        _explain(exc, self.queue_url),
                    )
                    self.sleep(delay, self.stop)
                    self._maintain(False)
                    continue
                if failing_since is not None:  # it works again: back off from the start
                    delays, failing_since = self.policy.receive_backoff.delays(), None
                if msgs:
                    self._archive_and_delete(msgs)
                backlog = self.clock() >= next_backlog
                self._maintain(backlog)
                if backlog:
                    next_backlog = self.clock() + self.policy.backlog_interval
                if msgs:
                    self.on_batch(self.stats)
                elif not self.follow and wait >= 1:
                    break  # a long poll found nothing: the queue is empty
            else:
                self.stats.stopped_by = "signal"
        finally:
            self.stats.seconds = self.clock() - start
        return self.stats

    def close(self) -> DrainStats:
        """Publish every open file (and ship it); count what could not be shipped."""
        self.writer.close()
        if self.writer.shipper is not None:
            self.writer.ship_pending()
            from .collector.archive import spool_status

            self.stats.unshipped_files = spool_status(self.writer.spool)["files"]
        return self.stats

    # -- steps -------------------------------------------------------------------------
    def _receive(self, wait: int) -> list[dict]:
        resp = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=MAX_BATCH,
            WaitTimeSeconds=max(0, min(MAX_WAIT_SECONDS, wait)),
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        msgs = resp.get("Messages", [])
        self.stats.received += len(msgs)
        if msgs:
            self.stats.batches += 1
        return msgs

    def _archive_and_delete(self, msgs: list[dict]) -> None:
        lines = []
        for m in msgs:
            line, is_json = archive_line(m.get("Body", ""))
            lines.append(line)
            self.stats.not_json += not is_json
        try:
            self.writer.append_many(PROVIDER, lines)  # one fsync for the batch
        except ArchiveError as exc:
            self._release(msgs)
            raise DrainError(
                f"{exc} under {self.writer.spool}; nothing of this batch was deleted from the "
                f"queue (the messages are visible again): make the archive writable (disk space, "
                f"permissions, a file where a directory should be) and run drain-sqs again"
            ) from exc
        self.stats.archived += len(msgs)
        self._delete(msgs)

    def _delete(self, msgs: list[dict]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
        try:
            resp = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 - archived already: a redelivery dedupes at load
            self.stats.delete_failures += len(entries)
            log.warning(
                "deleting %d archived messages failed (they will be received and archived "
                "again; the load drops the copies by event_id): %s",
                len(entries),
                _explain(exc, self.queue_url),
            )
            return
        failed = resp.get("Failed", [])
        self.stats.deleted += len(resp.get("Successful", []))
        if failed:
            self.stats.delete_failures += len(failed)
            log.warning(
                "SQS did not delete %d archived messages (%s); they will be archived again "
                "and deduplicated at load",
                len(failed),
                ", ".join(sorted({f.get("Code", "?") for f in failed})),
            )

    def _release(self, msgs: list[dict]) -> None:
        """Make messages that could not be archived visible again at once (best effort:
        otherwise they come back after the visibility timeout)."""
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(msgs)
        ]
        try:
            self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 - they reappear after the visibility timeout anyway
            log.warning(
                "could not release the unarchived messages (they reappear after the "
                "visibility timeout): %s",
                exc,
            )

    def _maintain(self, backlog: bool) -> None:
        self.writer.maintain(retry_backlog=backlog)
