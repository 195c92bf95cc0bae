"""The collector's Flask application: verify, archive durably, then acknowledge.

Order of work for a post: is the provider configured -> credentials in headers or URL
(Basic auth, ``?api_key=``) -> size -> credentials in the raw body (SendGrid signature,
a CMC form's api_key found by a byte search) -> parsing (JSON, the CMC form) -> durable
append (fsync) -> 2xx. Nothing is parsed before the sender is authenticated, except an SNS
envelope or a CMC JSON body, whose credentials are inside the document. Whatever fails
gets a 4xx (5xx when the disk write fails, so the provider retries) and is never
archived; the reason is logged and counted, the body never logged.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..records import parse_json
from .archive import (
    DEFAULT_ROTATE_SECONDS,
    ArchiveError,
    ArchiveWriter,
    Shipper,
    compact_line,
    is_remote,
    spool_status,
)
from .sns import SnsVerifier, check_sns_url, fetch_url
from .verification import (
    DEFAULT_SIGNATURE_MAX_AGE,
    REASONS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Rejection,
    SendGridVerifier,
    check_api_key,
    check_basic_auth,
    form_field,
)

log = logging.getLogger("mailpulse.collector")

PROVIDERS = ("sendgrid", "cmc", "ses")
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

COUNTER_KEYS = (
    [
        "accepted",
        "bytes",
        "write_errors",
        "archive_files",
        "archive_files_closed",
        "archive_files_shipped",
        "ship_failures",
        "subscription_confirmations",
        "subscriptions_confirmed",
    ]
    + [f"accepted_{p}" for p in PROVIDERS]
    + [f"rejected_{r}" for r in REASONS]
)


class Counters:
    """Named integer counters. ``shared=True`` puts them in shared memory created before
    gunicorn forks its workers, so /healthz shows the totals of all workers."""

    def __init__(self, shared: bool = False):
        self._index = {k: i for i, k in enumerate(COUNTER_KEYS)}
        if shared:
            self._values = multiprocessing.RawArray("q", len(COUNTER_KEYS))
            self._lock = multiprocessing.Lock()
        else:
            self._values = [0] * len(COUNTER_KEYS)
            self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        i = self._index[name]
        with self._lock:
            self._values[i] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            vals = list(self._values)
        d = dict(zip(COUNTER_KEYS, vals))
        return {
            "accepted": d["accepted"],
            "accepted_by_provider": {p: d[f"accepted_{p}"] for p in PROVIDERS},
            "rejected": sum(d[f"rejected_{r}"] for r in REASONS),
            "rejected_by_reason": {r: d[f"rejected_{r}"] for r in REASONS if d[f"rejected_{r}"]},
            "bytes": d["bytes"],
            "write_errors": d["write_errors"],
            "archive_files": {
                "opened": d["archive_files"],
                "closed": d["archive_files_closed"],
                "shipped": d["archive_files_shipped"],
                "ship_failures": d["ship_failures"],
            },
            "sns_subscription_confirmations": {
                "received": d["subscription_confirmations"],
                "confirmed": d["subscriptions_confirmed"],
            },
        }


@dataclass
class CollectorConfig:
    """Everything the collector needs, read once by ``mailpulse serve`` (flags/env)."""

    archive: str
    spool_dir: str | None = None
    sendgrid_keys: list = field(default_factory=list)  # loaded EC public keys
    signature_max_age: int = DEFAULT_SIGNATURE_MAX_AGE
    sendgrid_basic_auth: tuple[str, str] | None = None
    cmc_api_key: str | None = None
    sns_topic_arns: list[str] = field(default_factory=list)
    sns_cert_dir: str | None = None
    sns_ca_certs: list = field(default_factory=list)
    confirm_subscriptions: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_file_bytes: int = 64 * 1024 * 1024
    maintain_interval: float = 30.0
    rotate_seconds: float = DEFAULT_ROTATE_SECONDS
    #: /healthz says ``degraded`` once an unshipped file is older than this (seconds);
    #: default: two maintenance rounds plus the rotation time
    ship_grace_seconds: float | None = None

    @property
    def local_dir(self) -> Path:
        """Where files are written: the archive itself, or the spool for shipping."""
        return Path(self.spool_dir) if self.spool_dir else Path(self.archive)

    @property
    def ships(self) -> bool:
        return is_remote(self.archive) or (
            self.spool_dir is not None
            and Path(self.spool_dir).resolve() != Path(self.archive).resolve()
        )

    def enabled(self) -> dict[str, bool]:
        return {
            "sendgrid": bool(self.sendgrid_keys),
            "cmc": bool(self.cmc_api_key),
            "ses": bool(self.sns_topic_arns),
        }


class CollectorState:
    """Per worker process: the archive writer (created lazily after gunicorn forks, so each
    worker has its own instance id) and its maintenance thread."""

    def __init__(self, config: CollectorConfig, counters: Counters, now: Callable[[], datetime]):
        self.config = config
        self.counters = counters
        self.now = now
        self._writer: ArchiveWriter | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def writer(self) -> ArchiveWriter:
        w = self._writer
        if w is not None and self._pid == os.getpid():
            return w
        with self._lock:
            if self._writer is None or self._pid != os.getpid():
                cfg = self.config
                shipper = Shipper(cfg.archive) if cfg.ships else None
                w = ArchiveWriter(
                    cfg.local_dir,
                    max_bytes=cfg.max_file_bytes,
                    rotate_seconds=cfg.rotate_seconds,
                    clock=self.now,
                    shipper=shipper,
                    on_event=self.counters.add,
                )
                try:
                    w.recover()  # files left by workers that died
                except OSError as exc:
                    log.warning(
                        "archive recovery sweep failed (retried by the next worker): %s", exc
                    )
                self._writer, self._pid = w, os.getpid()
                if cfg.maintain_interval > 0:
                    self._stop = threading.Event()
                    threading.Thread(
                        target=self._maintain_loop,
                        args=(w, self._stop),
                        name="archive-maintenance",
                        daemon=True,
                    ).start()
            return self._writer

    def _maintain_loop(self, w: ArchiveWriter, stop: threading.Event) -> None:
        """Publish each file when it is due (``--rotate-seconds``, the hour, or closed by
        a post) and retry failed uploads every ``maintain_interval`` seconds."""
        interval = self.config.maintain_interval
        next_round = time.monotonic() + interval
        while not stop.is_set():
            wait = next_round - time.monotonic()
            due = w.seconds_until_due()
            if due is not None:
                wait = min(wait, due)
            if wait > 0:
                w.wakeup.wait(wait)
            if stop.is_set():
                return
            backlog = time.monotonic() >= next_round
            try:
                w.maintain(retry_backlog=backlog)
            except Exception as exc:  # noqa: BLE001 - keep the thread alive; retried next round
                log.warning("archive maintenance failed (retrying in %ss): %s", interval, exc)
                stop.wait(min(interval, 5.0))
            if backlog:
                next_round = time.monotonic() + interval

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "unshipped": ...}`` from the spool (the same
        for every worker): degraded while an upload failed and files wait, or a file has
        waited longer than the grace period."""
        cfg = self.config
        if not cfg.ships:
            return {"status": "ok"}
        st = spool_status(cfg.local_dir, time.time())
        grace = cfg.ship_grace_seconds
        if grace is None:
            grace = 2 * cfg.maintain_interval + (cfg.rotate_seconds or 0)
        last = st.pop("last_error")
        degraded = st["files"] > 0 and (last is not None or (st["oldest_age_seconds"] or 0) > grace)
        out: dict[str, Any] = {
            "status": "degraded" if degraded else "ok",
            "archive": cfg.archive,
            "unshipped": st,
        }
        if degraded and last is not None:
            out["ship_error"] = last
        return out

    def shutdown(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.wakeup.set()
        if self._writer is not None and self._pid == os.getpid():
            self._writer.close()


def create_app(
    config: CollectorConfig,
    *,
    counters: Counters | None = None,
    clock: Callable[[], float] = time.time,
    now: Callable[[], datetime] | None = None,
    fetch: Callable[[str], bytes] = fetch_url,
) -> Flask:
    """The WSGI app. ``clock`` (epoch seconds) drives the signature age check, ``now``
    (aware datetime) the archive hours and certificate validity; ``fetch`` downloads SNS
    certificates and confirmation URLs."""
    now = now or (lambda: datetime.fromtimestamp(clock(), timezone.utc))
    counters = counters or Counters()
    state = CollectorState(config, counters, now)
    sg = (
        SendGridVerifier(config.sendgrid_keys, config.signature_max_age, clock)
        if config.sendgrid_keys
        else None
    )
    sns = (
        SnsVerifier(
            config.sns_topic_arns,
            cert_dir=config.sns_cert_dir,
            ca_certs=config.sns_ca_certs,
            fetch=fetch,
            clock=now,
        )
        if config.sns_topic_arns
        else None
    )

    app = Flask("mailpulse.collector")
    # One byte over the limit: Werkzeug's LimitedStream returns a chunked body cut at
    # MAX_CONTENT_LENGTH without raising, so read_body reads one byte more and checks.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes + 1
    app.extensions["mailpulse"] = state

    def reply(code: int, **body: Any) -> Response:
        return Response(json.dumps(body), status=code, mimetype="application/json")

    def reject(provider: str, exc: Rejection) -> Response:
        counters.add(f"rejected_{exc.reason}")
        log.warning(
            "rejected %s post from %s: %s%s",
            provider,
            request.remote_addr,
            exc.reason,
            f" ({exc.detail})" if exc.detail else "",
        )
        resp = reply(exc.status, error=exc.reason)
        if exc.status == 401 and provider == "sendgrid" and config.sendgrid_basic_auth:
            resp.headers["WWW-Authenticate"] = 'Basic realm="mailpulse"'
        return resp

    def read_body() -> bytes:
        if request.content_length is not None and request.content_length > config.max_body_bytes:
            raise Rejection(
                "too_large", f"{request.content_length} bytes, limit {config.max_body_bytes}"
            )
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise Rejection("too_large", f"limit {config.max_body_bytes} bytes") from None
        if len(body) > config.max_body_bytes:
            raise Rejection(
                "too_large", f"chunked body over the limit of {config.max_body_bytes} bytes"
            )
        return body

    def parse(body: bytes, kinds=(list, dict)) -> Any:
        doc, err = parse_json(body)
        if err is not None:
            raise Rejection("not_json", err)
        if not isinstance(doc, kinds):
            raise Rejection("not_json", f"a JSON {type(doc).__name__}, not an array or object")
        return doc

    def archive(provider: str, line: bytes) -> Response:
        try:
            state.writer().append(provider, line)
        except (ArchiveError, OSError) as exc:
            log.error(
                "could not archive a %s post (answered 503 so it is retried): %s", provider, exc
            )
            return reply(503, error="archive_write_failed")
        counters.add("accepted")
        counters.add(f"accepted_{provider}")
        counters.add("bytes", len(line) + 1)
        return reply(200, status="accepted")

    def not_configured(provider: str, how: str) -> Rejection:
        return Rejection("not_configured", f"{provider} webhook is off: {how}")

    @app.post("/webhooks/sendgrid")
    def sendgrid() -> Response:
        try:
            if sg is None:
                raise not_configured("sendgrid", "set MAILPULSE_SENDGRID_PUBLIC_KEYS")
            if config.sendgrid_basic_auth:
                check_basic_auth(request.headers.get("Authorization"), config.sendgrid_basic_auth)
            body = read_body()
            sg.verify(
                body, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER)
            )
            parse(body)
        except Rejection as exc:
            return reject("sendgrid", exc)
        return archive("sendgrid", compact_line(body))

    @app.post("/webhooks/cmc")
    def cmc() -> Response:
        try:
            if not config.cmc_api_key:
                raise not_configured("cmc", "set MAILPULSE_CMC_API_KEY")
            query_key = request.args.get("api_key")
            if query_key is not None:
                check_api_key(query_key, config.cmc_api_key)
            body = read_body()
            form = _is_form(body, request.mimetype)
            if query_key is None and form:
                # before parsing: an unauthenticated form costs a byte search, not a parse
                check_api_key(form_field(body, b"api_key"), config.cmc_api_key)
            doc, line = _cmc_document(body, form)
            if query_key is None and not form:
                # a JSON body carries its key inside: the (linear, C) JSON parse comes first
                check_api_key(
                    doc.get("api_key") if isinstance(doc.get("api_key"), str) else None,
                    config.cmc_api_key,
                )
        except Rejection as exc:
            return reject("cmc", exc)
        return archive("cmc", line)

    @app.post("/webhooks/ses")
    def ses() -> Response:
        try:
            if sns is None:
                raise not_configured("ses", "set MAILPULSE_SNS_TOPIC_ARNS (or --sns-topic-arn)")
            body = read_body()
            msg = parse(body, kinds=(dict,))
            header_type = request.headers.get("x-amz-sns-message-type")
            if header_type and header_type != msg.get("Type"):
                raise Rejection(
                    "bad_request", "x-amz-sns-message-type does not match the message Type"
                )
            sns.verify(msg)
            if msg["Type"] != "Notification":
                return _sns_control(msg)
        except Rejection as exc:
            return reject("ses", exc)
        return archive("ses", compact_line(body))

    def _sns_control(msg: dict[str, Any]) -> Response:
        if msg["Type"] == "UnsubscribeConfirmation":
            log.warning(
                "SNS topic %s unsubscribed this endpoint; to subscribe again visit %s",
                msg["TopicArn"],
                msg.get("SubscribeURL"),
            )
            return reply(200, status="noted")
        url = check_sns_url(msg.get("SubscribeURL"), pem=False)
        counters.add("subscription_confirmations")
        if not config.confirm_subscriptions:
            log.warning(
                "SNS subscription confirmation for topic %s: confirm it by visiting %s "
                "(or run with --confirm-subscriptions)",
                msg["TopicArn"],
                url,
            )
            return reply(200, status="confirmation_logged")
        try:
            fetch(url)
        except (OSError, ValueError) as exc:
            log.error(
                "confirming the SNS subscription for %s failed: %s; visit %s",
                msg["TopicArn"],
                exc,
                url,
            )
            return reply(502, error="subscription_confirmation_failed")
        counters.add("subscriptions_confirmed")
        log.warning("confirmed the SNS subscription for topic %s", msg["TopicArn"])
        return reply(200, status="subscription_confirmed")

    @app.get("/healthz")
    def healthz() -> Response:
        health = state.health()
        return reply(200, **health, providers=config.enabled(), counters=counters.snapshot())

    return app


def _is_form(body: bytes, mimetype: str) -> bool:
    """CMC posts ``api_key``, ``server_composition``, ``event_type`` and ``event`` either as
    a form (``event`` a JSON string) or, when "use JSON" is set, as a JSON object; a form is
    recognised by its content type, or by its shape when the type is missing or wrong."""
    if mimetype == "application/x-www-form-urlencoded":
        return True
    return body[:200].lstrip()[:1] not in (b"{", b"[") and b"=" in body[:200]


def _cmc_document(body: bytes, form: bool) -> tuple[dict[str, Any], bytes]:
    """The CMC document and its archive line: the api_key (a credential) is removed; a form
    post becomes the JSON object the normalizer reads."""
    if form:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise Rejection("bad_request", "unreadable form body") from None
        doc: dict[str, Any] = {k: v[-1] for k, v in form.items()}
        if "event" in doc:
            event, err = parse_json(doc["event"].encode("utf-8"))
            if err is not None or not isinstance(event, dict):
                raise Rejection(
                    "not_json", f"form field 'event' is not a JSON object ({err or 'wrong type'})"
                )
            doc["event"] = event
        clean = {k: v for k, v in doc.items() if k != "api_key"}
        return doc, json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    doc, err = parse_json(body)
    if err is not None:
        raise Rejection("not_json", err)
    if not isinstance(doc, dict):
        raise Rejection("not_json", "a CMC body is a JSON object")
    if "api_key" in doc:
        clean = {k: v for k, v in doc.items() if k != "api_key"}
        return doc, json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return doc, compact_line(body)
