"""Clean a list before sending: which of *my* addresses must I not mail, why, and since when.

>>> result = clean_list(["ann@example.com", "bob@docomo.ne.jp"], warehouse="duckdb:///w.duckdb")
>>> result.keep                     # the addresses to send to, in the list's order
>>> [(d.email, d.reason, d.last_seen) for d in result.drop]

The list is hashed here, with the same keyed hasher as the loads (``MAILPULSE_HASH_KEY``);
only hashes go to the warehouse, and the addresses in the result are the caller's own
(as given), never read from the warehouse. The answer comes from the ``suppressions``
derived table (queries/suppressions: hard bounces, spam reports, unsubscribes, repeated
soft bounces, invalid addresses, and drops for those reasons), so it is as fresh as the
last `mailpulse outcomes` run. A line that is no address at all (no ``name@domain``) is
dropped here as ``malformed_address`` without asking the warehouse; a repeated address
is kept once (``duplicates`` counts the rest).

The companion of :func:`pipelines.watcher.already_sent` (have I mailed them already?).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from .hashing import EmailHasher, resolve_key
from .warehouse import Warehouse, WarehouseError, open_warehouse

log = logging.getLogger(__name__)

#: Reasons, most serious first: a recipient with several is reported with the first.
REASON_ORDER = ("spam_report", "unsubscribe", "hard_bounce", "invalid_address", "soft_bounces")
#: What each reason means, for people.
REASON_TEXT = {
    "spam_report": "complaint (spam report)",
    "unsubscribe": "unsubscribed",
    "hard_bounce": "hard bounce",
    "invalid_address": "invalid address",
    "soft_bounces": "repeated soft bounces",
    "malformed_address": "not an address (name@domain)",
}
#: The suppressions log reaches back this far by default (every computed day).
EARLIEST = date(2000, 1, 1)
#: Hashes per query (BigQuery limits the size of a query's parameters).
MAX_HASHES_PER_QUERY = 20_000

SUPPRESSED_SQL = """
SELECT email_hash, reason, MIN(first_seen) AS first_seen, MAX(last_seen) AS last_seen,
       SUM(event_count) AS event_count
FROM suppressions
WHERE event_date BETWEEN @start_date AND @end_date
  AND email_hash IN UNNEST(@hashes)
GROUP BY email_hash, reason
"""


@dataclass(frozen=True)
class Suppressed:
    """An address of the caller's list not to mail: the main reason and when."""

    email: str
    reason: str
    #: every reason, most serious first
    reasons: tuple[str, ...]
    #: first and latest qualifying event of the main reason (None for malformed_address)
    first_seen: datetime | None
    last_seen: datetime | None
    #: reason -> (first_seen, last_seen)
    seen: Mapping[str, tuple[datetime, datetime]] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return REASON_TEXT.get(self.reason, self.reason)


@dataclass
class CleanList:
    """The list, split: ``keep`` (addresses to send to) and ``drop`` (:class:`Suppressed`),
    both in the list's order; ``duplicates`` repeated addresses left out of both."""

    keep: list[str]
    drop: list[Suppressed]
    duplicates: int = 0
    #: the latest day of the suppressions log read (how fresh the answer is), or None
    suppressions_through: date | None = None

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.drop:
            out[d.reason] = out.get(d.reason, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: _rank(kv[0])))


def _rank(reason: str) -> int:
    return REASON_ORDER.index(reason) if reason in REASON_ORDER else len(REASON_ORDER)


def is_address(value: str) -> bool:
    """``name@domain``: something on both sides of the last ``@``, no spaces inside."""
    v = value.strip()
    local, at, domain = v.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in v)


def clean_list(
    email_list: Iterable[str],
    *,
    warehouse: "str | Warehouse | None" = None,
    since: date | None = None,
    until: date | None = None,
    hasher: EmailHasher | None = None,
    retry_policy: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
) -> CleanList:
    """Split ``email_list`` into the addresses to keep and those to drop, with their
    reason (hard bounce, complaint, unsubscribe, repeated soft bounces, invalid address)
    and when, from ``suppressions`` rows qualified in [since, until] (default: all of
    them). Transient warehouse errors are retried per ``retry_policy`` (the watcher's
    :data:`pipelines.watcher.DEFAULT_RETRY_POLICY` by default)."""
    from .watcher import DEFAULT_RETRY_POLICY, is_transient

    if isinstance(email_list, (str, bytes)):
        raise TypeError(
            "email_list must be a list of addresses, not one string "
            "(wrap a single address in a list)"
        )
    environ = os.environ if environ is None else environ
    until = until or datetime.now(timezone.utc).date()
    since = since or EARLIEST
    if until < since:
        raise ValueError(f"until {until} is before since {since}; swap them")
    if warehouse is None:
        from .config import default_warehouse_uri

        warehouse = default_warehouse_uri(environ)
    owned = not isinstance(warehouse, Warehouse)
    wh = open_warehouse(warehouse)
    try:
        if hasher is None:
            hasher = EmailHasher(resolve_key(environ, embedded=wh.dialect == "duckdb"))
        order: list[tuple[str, str | None]] = []  # (address as given, hash or None)
        seen: set[str] = set()
        duplicates = 0
        for a in email_list:
            if not isinstance(a, str):
                raise TypeError(f"email_list holds {type(a).__name__} {a!r}; addresses are strings")
            if not a.strip():
                continue
            if not is_address(a):
                order.append((a, None))
                continue
            h = hasher.hash(a)
            if h in seen:
                duplicates += 1
                continue
            seen.add(h)
            order.append((a, h))
        hashes = [h for _, h in order if h is not None]
        policy = retry_policy or DEFAULT_RETRY_POLICY
        rows = (
            _suppressed_rows(wh, hashes, since, until, policy, sleep, is_transient)
            if hashes
            else []
        )
        latest = _latest_day(wh, since, until, policy, sleep, is_transient) if hashes else None
    finally:
        if owned:
            wh.close()
    found: dict[str, dict[str, tuple[datetime, datetime]]] = {}
    for r in rows:
        found.setdefault(r["email_hash"], {})[r["reason"]] = (
            _utc(r["first_seen"]),
            _utc(r["last_seen"]),
        )
    keep: list[str] = []
    drop: list[Suppressed] = []
    for address, h in order:
        if h is None:
            drop.append(
                Suppressed(address, "malformed_address", ("malformed_address",), None, None, {})
            )
        elif h in found:
            reasons = tuple(sorted(found[h], key=_rank))
            first, last = found[h][reasons[0]]
            drop.append(Suppressed(address, reasons[0], reasons, first, last, found[h]))
        else:
            keep.append(address)
    return CleanList(keep=keep, drop=drop, duplicates=duplicates, suppressions_through=latest)


def _retrying(fn, policy, sleep, is_transient):
    """``fn()``, retrying transient errors per ``policy``; other errors propagate."""
    from .backoff import retry_call

    def warn(exc, delay):
        if delay is not None:
            log.warning("transient warehouse error (retrying in %.1fs): %s", delay, exc)

    return retry_call(fn, policy, predicate=is_transient, sleep=sleep, on_error=warn)


def _suppressed_rows(
    wh: Warehouse, hashes: list[str], since: date, until: date, policy, sleep, is_transient
) -> list[dict[str, Any]]:
    if not wh.table_exists("suppressions"):
        raise WarehouseError(
            f"suppressions does not exist in {wh.uri or wh!r}; run `mailpulse outcomes` "
            "(or compute_outcomes) over the days you have loaded first"
        )
    rows: list[dict[str, Any]] = []
    for i in range(0, len(hashes), MAX_HASHES_PER_QUERY):
        params = {
            "start_date": since,
            "end_date": until,
            "hashes": hashes[i : i + MAX_HASHES_PER_QUERY],
        }
        rows += _retrying(
            lambda params=params: wh.query(SUPPRESSED_SQL, params).to_pylist(),
            policy,
            sleep,
            is_transient,
        )
    return rows


def _latest_day(wh: Warehouse, since: date, until: date, policy, sleep, is_transient):
    rows = _retrying(
        lambda: wh.query(
            "SELECT MAX(event_date) AS latest FROM suppressions "
            "WHERE event_date BETWEEN @start_date AND @end_date",
            {"start_date": since, "end_date": until},
        ).to_pylist(),
        policy,
        sleep,
        is_transient,
    )
    return rows[0]["latest"] if rows else None


def _utc(v):
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=timezone.utc)
    return v.astimezone(timezone.utc) if isinstance(v, datetime) else v


__all__ = ["clean_list", "CleanList", "Suppressed", "REASON_ORDER", "REASON_TEXT", "is_address"]
