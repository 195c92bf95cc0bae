"""A watch and the send log (:mod:`pipelines.sends`): the default send id, recording the
watched list once the warehouse exists (never failing the watch for it), and reading a
logged send back so :func:`pipelines.watcher.resume` can watch it by hash."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from .hashing import EmailHasher
from .timeutil import rfc3339, to_utc
from .warehouse import Warehouse, WarehouseError
from .watch_queries import is_transient

#: The watcher's log: everything a watch says is under one logger name.
log = logging.getLogger("pipelines.watcher")


def default_send_id(category: str, since: datetime) -> str:
    """The send id of a watch not given one: category and send time, so the same watch
    rerun (or another process watching the same send) names the same send."""
    return f"{category}@{rfc3339(since)}"


class _SendRecorder:
    """Records the watched list in the send log once the warehouse exists, at most once.

    Recording never breaks a watch: a warehouse not created yet is waited for (tried again
    at the next poll once it exists), a file held by a loader beyond the backend's lock
    retries is tried again at the next poll, anything else (a read-only warehouse, a
    BigQuery viewer) is logged once and the watch goes on unrecorded."""

    def __init__(
        self,
        addresses: list[str],
        send_id: str,
        category: str,
        since: datetime,
        hasher: EmailHasher,
    ):
        self.addresses, self.send_id, self.category, self.since = (
            addresses,
            send_id,
            category,
            since,
        )
        self.hasher = hasher
        self.recorded = False
        self.gave_up = False
        self.outcome = None  # pipelines.sends.Recorded

    @property
    def pending(self) -> bool:
        return not self.recorded and not self.gave_up

    def attempt(self, wh: Warehouse) -> None:
        if not self.pending:
            return
        from .sends import record_sends

        try:
            self.outcome = record_sends(
                self.addresses,
                send_id=self.send_id,
                category=self.category,
                sent_at=self.since,
                warehouse=wh,
                hasher=self.hasher,
            )
        except Exception as exc:  # recording is a side effect: it must not stop the watch
            if is_transient(exc):
                log.warning(
                    "watch %r: the send log is busy (%s); recording send %r again at the next poll",
                    self.category,
                    exc,
                    self.send_id,
                )
                return
            self.gave_up = True
            log.error(
                "watch %r: cannot record send %r in the send log (%s: %s); the watch "
                "goes on, but it cannot be resumed with --send-id. Make the warehouse "
                "writable, or record the list with `mailpulse sends import FILE`",
                self.category,
                self.send_id,
                type(exc).__name__,
                exc,
            )
            return
        self.recorded = True
        log.info(
            "watch %r: send %r in the send log (%d new, %d already there)",
            self.category,
            self.send_id,
            self.outcome.recorded,
            self.outcome.already_recorded,
        )

    def finish(self) -> None:
        if self.pending:
            log.warning(
                "watch %r: send %r not recorded in the send log (the warehouse did "
                "not exist before the watch ended); record it with `mailpulse sends "
                "import FILE` to resume it later",
                self.category,
                self.send_id,
            )


#: The log rows of one send (BigQuery SQL; the DuckDB backend translates).
SEND_LOG_SQL = """
SELECT email_hash, category, sent_at
FROM sends
WHERE sent_date BETWEEN @since AND @until
  AND send_id = @send_id
"""


@dataclass(frozen=True)
class LoggedSend:
    """A send as the log knows it: its recipients' hashes, category and start time."""

    send_id: str
    hashes: tuple[str, ...]
    category: str
    since: datetime


def logged_send(wh: Warehouse, send_id: str, category: str | None = None) -> LoggedSend:
    """Read a send back from the log; errors name the fix."""
    if not isinstance(send_id, str) or not send_id.strip():
        raise ValueError("send_id must be a non-empty string")
    if not wh.table_exists("sends"):
        raise WarehouseError(
            f"no send log in {getattr(wh, 'uri', '') or wh!r}; a watch "
            "records its list there (watch --emails ... --send-id ID), or "
            "record it with `mailpulse sends import FILE`"
        )
    rows = wh.query(
        SEND_LOG_SQL, {"send_id": send_id, "since": date(2000, 1, 1), "until": date(9999, 12, 31)}
    ).to_pylist()
    if not rows:
        raise WarehouseError(
            f"send {send_id!r} is not in the send log of "
            f"{getattr(wh, 'uri', '') or wh!r}; check the id (printed by "
            "`mailpulse watch`) or record the send first"
        )
    cats = sorted({r["category"] for r in rows if r["category"]})
    if category is not None:
        rows = [r for r in rows if r["category"] in (category, None)]
        if not rows:
            raise WarehouseError(
                f"send {send_id!r} has no recipient in category "
                f"{category!r}; its categories: {', '.join(cats) or 'none'}"
            )
    elif len(cats) != 1:
        raise WarehouseError(
            f"send {send_id!r} has {'no category' if not cats else 'categories ' + ', '.join(cats)}"
            " in the log; pass --category (category= in Python) to say which to watch"
        )
    else:
        category = cats[0]
    hashes = tuple(dict.fromkeys(r["email_hash"] for r in rows))
    since = min(to_utc(r["sent_at"]) for r in rows)
    return LoggedSend(send_id, hashes, category, since)
