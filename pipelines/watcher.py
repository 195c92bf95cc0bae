"""The post-send watcher: wait until a send has settled, then say what happened.

A campaign script sends to a list, then calls::

    from pipelines.watcher import wait_for_events
    counts = wait_for_events(emails, "newsletter-2026-11", sent_at)
    # {'delivered': 980, 'bounce': 12, 'dropped': 3, 'deferred': 5, 'unsettled': 5}

It replaces the script pattern described in provider-samples/README.md and fixes its
weaknesses:

- it counts **recipients, not events**: each recipient's status is the most final of all
  their events in the category since the send (:mod:`pipelines.status`: forward only, so
  a deferred-then-delivered recipient counts once, as delivered, and a late ``delivered``
  does not undo a ``bounce``);
- it waits until every recipient is **settled** (delivered, bounce or dropped), not until
  there are as many rows as addresses;
- every poll reads only partitions from the send date on (``event_date >= @since_date``),
  so its cost does not grow with the table's history;
- the default timeout scales sensibly with the list (:func:`default_timeout`);
- on timeout it returns (and posts) what is known and says it timed out; it raises only
  when asked (``raise_on_timeout=True``), and the exception carries the result;
- it works out of the box: a warehouse that does not exist yet (nothing loaded so far)
  is "nothing seen yet", not an error, until the timeout; and while no recipient has any
  event in the category, each poll asks which categories these recipients *do* have
  events in, so a misspelled category (or CMC mail loaded without its category field)
  shows within seconds in the log, the result (:attr:`WatchResult.hint`) and the CLI,
  not as "everyone never seen" at the timeout.

- it records the list in the send log (:mod:`pipelines.sends`, hashes only) under a send
  id (``send_id=``, default ``CATEGORY@TIME``), once the warehouse exists and without ever
  failing the watch for it; :func:`resume` watches a logged send again, from another
  process or later, by hash; at the timeout, recipients with no event at all are
  "sent, never reported by the provider" (:attr:`WatchResult.never_reported`).

Addresses are hashed locally (:class:`pipelines.hashing.EmailHasher`); only hashes are
sent to the warehouse, and hashes are mapped back to the caller's own addresses for the
report. Polling ("not settled yet") and retrying transient warehouse errors are
separate, each with one named, overridable :class:`~pipelines.backoff.Backoff`
(:data:`DEFAULT_POLL_POLICY`, :data:`DEFAULT_RETRY_POLICY`); clock and sleep are
injectable (tests never sleep).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Iterable, Iterator, Mapping

from .backoff import Backoff, retry_call
from .hashing import EmailHasher, resolve_key
from .status import SETTLED, rank_case_sql, status_case_sql
from .timeutil import format_duration, rfc3339, to_utc  # noqa: F401 (re-exported)
from .warehouse import TransientWarehouseError, Warehouse, WarehouseError, open_warehouse

log = logging.getLogger(__name__)

#: The keys of :func:`wait_for_events`' result, in order (DESIGN.md, "Watcher counts").
COUNT_KEYS = ("delivered", "bounce", "dropped", "deferred", "unsettled")

# -- the default timeout -------------------------------------------------------------------
#: 15 minutes for any send: SendGrid / SES / CMC report the first delivery attempt of most
#: mail within a minute or two, and the load into the warehouse adds its own latency.
DEFAULT_TIMEOUT_BASE = 15 * 60.0
#: plus 1 s per 10 recipients (100 s per 1,000): large sends are handed to the provider
#: over minutes, and the providers throttle per receiving domain.
DEFAULT_TIMEOUT_PER_RECIPIENT = 0.1
#: at most 3 hours: a recipient still deferred by then may stay deferred for up to 72 h
#: (the providers' retry window); waiting longer blocks the script for no news. Those
#: recipients are reported as ``deferred`` / ``unsettled``; rerun the watch later to
#: see where they ended.
DEFAULT_TIMEOUT_CAP = 3 * 60 * 60.0


def default_timeout(recipients: int) -> float:
    """Seconds to wait for ``recipients`` recipients: 15 min + 1 s per 10 recipients,
    capped at 3 h (1,000 -> 1,000 s; 10,000 -> 1,900 s; 99,000 and more -> 10,800 s).

    The old script formula ``max(n / 10 * 90, 300)`` gave 9 s per recipient (9,000 s for
    1,000 addresses, while its comment said 90 minutes) and had no upper bound."""
    return min(
        DEFAULT_TIMEOUT_BASE + DEFAULT_TIMEOUT_PER_RECIPIENT * max(recipients, 0),
        DEFAULT_TIMEOUT_CAP,
    )


# -- policies ------------------------------------------------------------------------------
#: When to look again while recipients are not settled yet. The first poll runs at once
#: (a watch started late may already be settled); the next after 5 s, each later one
#: 1.5 times later, at most 60 s apart; the last poll happens at the watch's deadline
#: (the timeout bounds polling; a policy given ``attempts`` also ends the watch, timed
#: out, after that many polls).
DEFAULT_POLL_POLICY = Backoff(initial=5.0, maximum=60.0, multiplier=1.5)
#: How one poll retries a transient warehouse error (a lock held by a loader beyond the
#: backend's own lock retries, a BigQuery 5xx, a dropped connection). Separate from
#: polling: a poll that fails is tried 5 times in all (1 s, 2 s, 4 s, 8 s apart), then
#: the watch fails with :class:`WatchFailed` (carrying what was known).
DEFAULT_RETRY_POLICY = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, attempts=5)

#: Hashes per query: keeps a BigQuery request well under its size limit (65 bytes each).
MAX_HASHES_PER_QUERY = 20_000


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: TransientWarehouseError, BigQuery 5xx / 429, connection errors."""
    if isinstance(exc, TransientWarehouseError):
        return True
    if isinstance(exc, WarehouseError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:  # google-api-core is present whenever the BigQuery backend is used
        from google.api_core import exceptions as gexc
    except ImportError:  # pragma: no cover - core dependency
        return False
    if isinstance(exc, (gexc.ServerError, gexc.TooManyRequests)):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipientOutcome:
    """A recipient's status and the event that set it (None fields when never seen)."""

    email: str
    status: str | None  # delivered | bounce | dropped | deferred | processed | None
    event_type: str | None = None
    bounce_class: str | None = None
    reason: str | None = None
    smtp_status: str | None = None
    event_ts: datetime | None = None
    provider: str | None = None

    @property
    def settled(self) -> bool:
        return self.status in SETTLED


@dataclass
class WatchResult:
    """What is known about a send at the end of a watch (settled or timed out)."""

    category: str
    since: datetime
    recipients: int
    outcomes: dict[str, RecipientOutcome]  # caller's address -> outcome, in list order
    elapsed: float
    settled: bool
    timed_out: bool
    timeout: float
    polls: int = 0
    transient_errors: int = 0
    duplicates_in_list: int = 0
    #: what notifying did (pipelines.slack.NotifyReport), None when not notified
    notification: Any = None
    #: False while the warehouse has no ``events`` table (nothing loaded yet)
    warehouse_ready: bool = True
    #: while no recipient has an event in ``category``: the categories these recipients
    #: do have events in since the send (category -> recipients) ...
    other_categories: dict[str, int] = field(default_factory=dict)
    #: ... and how many have events without any category
    uncategorized: int = 0
    #: one sentence saying what the above means and what to check (None when all is well)
    hint: str | None = None
    #: the send's id in the send log (given, derived from category + time, or resumed)
    send_id: str | None = None
    #: True once the list is in the send log (recorded now or resumed from it)
    send_recorded: bool = False
    #: resumed from the log: recipients (``outcomes`` keys, ``email``) are hashes
    by_hash: bool = False

    # -- views -------------------------------------------------------------------------
    def _with(self, status) -> list[RecipientOutcome]:
        return [o for o in self.outcomes.values() if o.status == status]

    @property
    def bounced(self) -> list[RecipientOutcome]:
        return self._with("bounce")

    @property
    def dropped(self) -> list[RecipientOutcome]:
        return self._with("dropped")

    @property
    def failed(self) -> list[RecipientOutcome]:
        """Bounced and dropped recipients (the CSV posted to Slack)."""
        return [o for o in self.outcomes.values() if o.status in ("bounce", "dropped")]

    @property
    def delivered(self) -> list[str]:
        return [o.email for o in self._with("delivered")]

    @property
    def deferred(self) -> list[str]:
        """Recipients whose latest status is deferred (not settled)."""
        return [o.email for o in self._with("deferred")]

    @property
    def pending(self) -> list[str]:
        """Recipients the provider accepted (``processed``) with no outcome yet."""
        return [o.email for o in self._with("processed")]

    @property
    def never_seen(self) -> list[str]:
        """Recipients with no event at all in this category since the send."""
        return [o.email for o in self._with(None)]

    @property
    def never_reported(self) -> list[str]:
        """Sent, never reported by the provider: at the timeout, recipients with no event
        at all in this category since the send (empty while still waiting: they are then
        :attr:`not_yet_reported`)."""
        return self.never_seen if self.timed_out else []

    @property
    def not_yet_reported(self) -> list[str]:
        """While waiting (no timeout yet): recipients with no event so far."""
        return [] if self.timed_out else self.never_seen

    @property
    def unsettled(self) -> list[str]:
        return [o.email for o in self.outcomes.values() if not o.settled]

    @property
    def statuses(self) -> dict[str, str | None]:
        return {e: o.status for e, o in self.outcomes.items()}

    @property
    def counts(self) -> dict[str, int]:
        """``delivered``, ``bounce``, ``dropped`` (settled there), ``deferred`` (latest
        status deferred), ``unsettled`` (deferred, processed only, or never seen)."""
        c = Counter(o.status for o in self.outcomes.values())
        return {
            "delivered": c["delivered"],
            "bounce": c["bounce"],
            "dropped": c["dropped"],
            "deferred": c["deferred"],
            "unsettled": sum(n for s, n in c.items() if s not in SETTLED),
        }

    @property
    def bounce_classes(self) -> dict[str, int]:
        """Bounced recipients per class: hard, soft, block, undetermined."""
        c = Counter(o.bounce_class or "undetermined" for o in self.bounced)
        return {k: c[k] for k in ("hard", "soft", "block", "undetermined")}

    def rate(self, key: str) -> float | None:
        """``counts[key]`` divided by recipients (None for an empty list)."""
        return self.counts[key] / self.recipients if self.recipients else None

    def top_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        """The most common reasons of bounced and dropped recipients, addresses masked so
        the same reason groups together (``550 5.1.1 <x@y>: unknown`` -> ``<address>``)."""
        c = Counter(mask_addresses(o.reason or "(no reason given)") for o in self.failed)
        return c.most_common(n)

    @property
    def state(self) -> str:
        return "settled" if self.settled else ("timed out" if self.timed_out else "unsettled")

    def summary(self) -> str:
        """A few lines of plain text (the console summary and the CLI output)."""
        c, n = self.counts, self.recipients

        def pct(k):
            r = self.rate(k)
            return "" if r is None else f" ({r:.1%})"

        bc = self.bounce_classes
        lines = [
            f"mailpulse watch: category {self.category!r} since {_iso(self.since)}: "
            f"{self.state} after {format_duration(self.elapsed)}"
            + (f" (timeout {format_duration(self.timeout)})" if self.timed_out else ""),
            f"  recipients  {n}",
            f"  delivered   {c['delivered']}{pct('delivered')}",
            f"  bounced     {c['bounce']}{pct('bounce')}  hard {bc['hard']} / soft {bc['soft']}"
            f" / block {bc['block']} / undetermined {bc['undetermined']}",
            f"  dropped     {c['dropped']}{pct('dropped')}",
            f"  deferred    {c['deferred']}{pct('deferred')}",
            f"  unsettled   {c['unsettled']}{pct('unsettled')}  (never seen "
            f"{len(self.never_seen)}, accepted only {len(self.pending)})",
        ]
        if self.timed_out and self.never_reported:
            lines.append(
                f"  never reported {len(self.never_reported)}{_pct_of(self, len(self.never_reported))}"
                "  (sent, never reported by the provider: no event at all by the "
                "timeout)"
            )
        if self.send_id:
            lines.append(
                f"  send id     {self.send_id}"
                + ("" if self.send_recorded else "  (not in the send log)")
                + f"  (resume: mailpulse watch --send-id {self.send_id})"
            )
        reasons = self.top_reasons()
        if reasons:
            lines.append("  top reasons:")
            lines += [f"    {k:>4}  {r}" for r, k in reasons]
        if self.hint:
            lines.append(f"  note: {self.hint}")
        if self.timed_out:
            lines.append(
                "  timed out: the counts above are what was known at the timeout; "
                "rerun the watch later to see where the unsettled recipients ended"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``mailpulse watch --json``)."""

        def outcome(o: RecipientOutcome) -> dict[str, Any]:
            d = asdict(o)
            d["event_ts"] = _iso(o.event_ts) if o.event_ts else None
            return d

        return {
            "category": self.category,
            "since": _iso(self.since),
            "recipients": self.recipients,
            "counts": self.counts,
            "bounce_classes": self.bounce_classes,
            "rates": {k: self.rate(k) for k in COUNT_KEYS},
            "state": self.state,
            "settled": self.settled,
            "timed_out": self.timed_out,
            "elapsed_seconds": round(self.elapsed, 3),
            "timeout_seconds": self.timeout,
            "polls": self.polls,
            "transient_errors": self.transient_errors,
            "duplicates_in_list": self.duplicates_in_list,
            "top_reasons": [{"reason": r, "recipients": k} for r, k in self.top_reasons()],
            "bounced": [outcome(o) for o in self.bounced],
            "dropped": [outcome(o) for o in self.dropped],
            "deferred": self.deferred,
            "pending": self.pending,
            "never_seen": self.never_seen,
            "warehouse_ready": self.warehouse_ready,
            "hint": self.hint,
            "other_categories": dict(self.other_categories),
            "uncategorized": self.uncategorized,
            "send_id": self.send_id,
            "send_recorded": self.send_recorded,
            "by_hash": self.by_hash,
            "never_reported": len(self.never_reported),
            "not_yet_reported": len(self.not_yet_reported),
        }

    to_json = as_dict


def _pct_of(result: WatchResult, k: int) -> str:
    return f" ({k / result.recipients:.1%})" if result.recipients else ""


class WatchTimeout(TimeoutError):
    """Raised with ``raise_on_timeout=True``; ``.result`` holds what was known."""

    def __init__(self, result: WatchResult):
        self.result = result
        c = result.counts
        super().__init__(
            f"category {result.category!r}: {c['unsettled']} of {result.recipients} recipients "
            f"not settled after {format_duration(result.elapsed)} (timeout "
            f"{format_duration(result.timeout)}); counts so far {c}. Pass a longer timeout, "
            "or check that the load job is running if nothing was seen."
        )

    @property
    def counts(self) -> dict[str, int]:
        return self.result.counts


class WatchFailed(WarehouseError):
    """The warehouse kept failing beyond the retry policy; ``.result`` holds what the
    last successful poll knew (None when no poll succeeded)."""

    def __init__(self, message: str, result: WatchResult | None):
        super().__init__(message)
        self.result = result


# -- helpers -------------------------------------------------------------------------------
_ADDRESS = re.compile(r"<?[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+>?")


def mask_addresses(text: str) -> str:
    return _ADDRESS.sub("<address>", text)


# (shared with the Slack report and the commands: pipelines/timeutil.py)
_iso = rfc3339


def _addresses(email_list: Iterable[str]) -> list[str]:
    if isinstance(email_list, (str, bytes)):
        raise TypeError(
            "email_list must be a list of addresses, not one string "
            "(wrap a single address in a list)"
        )
    out = []
    for a in email_list:
        if not isinstance(a, str):
            raise TypeError(f"email_list holds {type(a).__name__} {a!r}; addresses are strings")
        if a.strip():
            out.append(a)
    return out


class _Recipients:
    """The caller's list, hashed locally: hash -> the caller's own address (first form)."""

    def __init__(self, email_list: Iterable[str], hasher: EmailHasher):
        self.by_hash: dict[str, str] = {}
        self.duplicates = 0
        for address in _addresses(email_list):
            h = hasher.hash(address)
            if h in self.by_hash:
                self.duplicates += 1
            else:
                self.by_hash[h] = address

    @classmethod
    def from_hashes(cls, hashes: Iterable[str]) -> "_Recipients":
        """Recipients known by hash only (a watch resumed from the send log): results
        then name hashes, never addresses."""
        self = cls([], None)  # type: ignore[arg-type]
        for h in hashes:
            self.by_hash.setdefault(h, h)
        return self

    @property
    def hashes(self) -> list[str]:
        return list(self.by_hash)

    def __len__(self) -> int:
        return len(self.by_hash)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- the queries (BigQuery SQL; the DuckDB backend translates) ------------------------------
_FILTER = """
  event_date >= @since_date
  AND event_ts >= @since
  AND @category IN UNNEST(categories)
  AND email_hash IN UNNEST(@hashes)"""

#: Each recipient's most final event across all their messages in the category since
#: the send (forward-only: highest rank, ties to the latest).
STATUS_SQL = f"""
SELECT email_hash, status, event_type, bounce_class, reason, smtp_status, event_ts, provider
FROM (
  SELECT email_hash, event_type, bounce_class, reason, smtp_status, event_ts, provider,
    {status_case_sql("event_type")} AS status,
    ROW_NUMBER() OVER (
      PARTITION BY email_hash
      ORDER BY {rank_case_sql("event_type")} DESC, event_ts DESC, event_id DESC) AS rn
  FROM events
  WHERE {_FILTER}
    AND {rank_case_sql("event_type")} > 0
) AS ranked
WHERE rn = 1
"""

#: Recipients with any event of a sent message (processed, deferred, delivered, dropped,
#: bounce, or engagement) in the category since ``since``.
ALREADY_SENT_SQL = f"""
SELECT DISTINCT email_hash
FROM events
WHERE {_FILTER}
  AND {rank_case_sql("event_type")} > 0
"""


#: While nothing is seen in the category: which categories these recipients have events
#: in since the send (NULL: events without any category, e.g. CMC mail loaded without
#: ``--cmc-category-field``).
OTHER_CATEGORIES_SQL = """
SELECT c AS category, COUNT(DISTINCT email_hash) AS recipients
FROM events LEFT JOIN UNNEST(categories) AS c
WHERE event_date >= @since_date
  AND event_ts >= @since
  AND email_hash IN UNNEST(@hashes)
GROUP BY category
"""

#: How many other categories a hint names (the rest are counted).
HINT_MAX_CATEGORIES = 5


def _params(category: str, since: datetime, hashes: list[str]) -> dict[str, Any]:
    return {"category": category, "since": since, "since_date": since.date(), "hashes": hashes}


def _run_query(
    wh: Warehouse, sql: str, category: str, since: datetime, hashes: list[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(hashes, MAX_HASHES_PER_QUERY):
        rows += wh.query(sql, _params(category, since, chunk)).to_pylist()
    return rows


def _other_categories(
    wh: Warehouse, since: datetime, hashes: list[str]
) -> tuple[dict[str, int], int]:
    """(category -> recipients, recipients with uncategorized events) since ``since``.
    Over several chunks a recipient is in one chunk only, so counts add up."""
    per: Counter = Counter()
    for chunk in _chunks(hashes, MAX_HASHES_PER_QUERY):
        params = {"since": since, "since_date": since.date(), "hashes": chunk}
        for r in wh.query(OTHER_CATEGORIES_SQL, params).to_pylist():
            per[r["category"]] += int(r["recipients"])
    uncategorized = per.pop(None, 0)
    return dict(sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))), uncategorized


def category_hint(
    category: str, recipients: int, other: Mapping[str, int], uncategorized: int
) -> str | None:
    """The sentence a user needs when nothing is seen in ``category``: where these
    recipients' events are instead (None when they have no event at all)."""
    if not other and not uncategorized:
        return None
    parts = []
    if other:
        named = list(other.items())[:HINT_MAX_CATEGORIES]
        more = len(other) - len(named)
        listed = ", ".join(f"{c!r} ({n})" for c, n in named) + (
            f" and {more} more" if more > 0 else ""
        )
        parts.append(
            f"their events are in other categories: {listed}; check the category name (--category)"
        )
    if uncategorized:
        parts.append(
            f"{uncategorized} have events without any category (CMC mail loaded "
            "without --cmc-category-field? SES mail without the category tag?)"
        )
    return (
        f"no event in category {category!r} for any of the {recipients} recipients "
        "since the send, but " + "; ".join(parts)
    )


def missing_warehouse_hint(wh: Warehouse) -> str:
    return (
        f"no events in {getattr(wh, 'uri', '') or wh!r} yet (nothing loaded so far); "
        "waiting for the first load: run `mailpulse load --follow` beside the collector, "
        "or the intraday DAG on BigQuery"
    )


def _with_retries(
    fn: Callable[[], Any],
    policy: Backoff,
    sleep: Callable[[float], None],
    on_error: Callable[[BaseException], None],
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Run ``fn``, retrying transient errors per ``policy``; other errors propagate."""

    def told(exc: BaseException, delay: float | None) -> None:
        on_error(exc)
        if delay is not None:
            log.warning("transient warehouse error (retrying in %.1fs): %s", delay, exc)

    return retry_call(fn, policy, predicate=is_transient, sleep=sleep, clock=clock, on_error=told)


# -- entry-point resolution -------------------------------------------------------------
def _resolve_warehouse(
    warehouse: "str | Warehouse | None", environ: Mapping[str, str]
) -> tuple[Warehouse, bool]:
    if warehouse is None:
        from .config import default_warehouse_uri

        warehouse = default_warehouse_uri(environ)
    owned = not isinstance(warehouse, Warehouse)
    return open_warehouse(warehouse), owned


def _resolve_hasher(
    hasher: EmailHasher | None, wh: Warehouse, environ: Mapping[str, str]
) -> EmailHasher:
    if hasher is not None:
        return hasher
    return EmailHasher(resolve_key(environ, embedded=wh.dialect == "duckdb"))


def _check_category(category: str) -> str:
    if not isinstance(category, str) or not category.strip():
        raise ValueError(
            "category must be a non-empty string (the category the mail was sent with)"
        )
    return category


# -- the send log ---------------------------------------------------------------------------
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


# -- the public API ------------------------------------------------------------------------
def watch(
    email_list: Iterable[str],
    category: str,
    timestamp,
    *,
    timeout: float | None = None,
    warehouse: "str | Warehouse | None" = None,
    notify: bool = True,
    raise_on_timeout: bool = False,
    hasher: EmailHasher | None = None,
    notifier=None,
    poll_policy: Backoff = DEFAULT_POLL_POLICY,
    retry_policy: Backoff = DEFAULT_RETRY_POLICY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
    send_id: str | None = None,
    record: bool = True,
) -> WatchResult:
    """Wait until every recipient of a send is settled (or the timeout), then report.

    Args:
        email_list: the addresses the mail was sent to (plain; hashed locally).
        category: the category the mail was sent with.
        timestamp: when the send started (datetime, date, ISO string or epoch seconds;
            naive means UTC). Events before it are ignored; pass a time just before the
            first message went out.
        timeout: seconds to wait; default :func:`default_timeout` of the list size.
        warehouse: URI or warehouse object; default the embedded DuckDB file
            (``pipelines.config.default_warehouse_uri()``).
        notify: post the summary (Slack when ``SLACK_BOT_TOKEN`` is set, else the console).
        raise_on_timeout: raise :class:`WatchTimeout` (after notifying) instead of
            returning a timed-out result.
        hasher: the EmailHasher; default from ``MAILPULSE_HASH_KEY``.
        notifier: an object with ``post_watch_summary(result)``; default from the
            environment (:func:`pipelines.slack.notifier_from_env`).
        poll_policy, retry_policy, clock, sleep: polling and transient-error retry.
        environ: the environment to read configuration from (default ``os.environ``).
        send_id: the send's id in the send log (default :func:`default_send_id`:
            category and time); in the result, and the id to :func:`resume` it with.
        record: record the list in the send log (hashed; once the warehouse exists).
    """
    environ = os.environ if environ is None else environ
    category = _check_category(category)
    since = to_utc(timestamp)
    if send_id is not None and (not isinstance(send_id, str) or not send_id.strip()):
        raise ValueError("send_id must be a non-empty string (the send's name in the log)")
    send_id = send_id.strip() if send_id else default_send_id(category, since)
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
    if notify and notifier is None:
        from .slack import notifier_from_env

        notifier = notifier_from_env(environ)  # configuration errors surface now, not later
    wh, owned = _resolve_warehouse(warehouse, environ)
    try:
        hasher = _resolve_hasher(hasher, wh, environ)
        addresses = _addresses(email_list)
        recipients = _Recipients(addresses, hasher)
        recorder = (
            _SendRecorder(addresses, send_id, category, since, hasher)
            if record and recipients
            else None
        )
        limit = default_timeout(len(recipients)) if timeout is None else float(timeout)
        try:
            result = _poll_until_settled(
                wh,
                recipients,
                category,
                since,
                limit,
                poll_policy,
                retry_policy,
                clock,
                sleep,
                recorder,
            )
        finally:
            if recorder is not None:
                recorder.finish()
        result.send_id = send_id
        result.send_recorded = recorder is not None and recorder.recorded
    finally:
        if owned:
            wh.close()
    return _finish(result, notify, notifier, raise_on_timeout)


def resume(
    send_id: str,
    *,
    category: str | None = None,
    timeout: float | None = None,
    warehouse: "str | Warehouse | None" = None,
    notify: bool = True,
    raise_on_timeout: bool = False,
    notifier=None,
    poll_policy: Backoff = DEFAULT_POLL_POLICY,
    retry_policy: Backoff = DEFAULT_RETRY_POLICY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
) -> WatchResult:
    """Watch a send recorded in the send log (by a watch in another process, earlier, or
    ``mailpulse sends import``): the recipients, category and send time come from the
    log, so no address is needed, and the result names recipients by hash (the
    ``email`` of each outcome is the hash). ``category`` picks one when the send has
    several. Otherwise as :func:`watch`."""
    environ = os.environ if environ is None else environ
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
    if notify and notifier is None:
        from .slack import notifier_from_env

        notifier = notifier_from_env(environ)
    wh, owned = _resolve_warehouse(warehouse, environ)
    try:
        send = _with_retries(
            lambda: logged_send(wh, send_id.strip(), category),
            retry_policy,
            sleep,
            lambda exc: None,
            clock,
        )
        recipients = _Recipients.from_hashes(send.hashes)
        limit = default_timeout(len(recipients)) if timeout is None else float(timeout)
        result = _poll_until_settled(
            wh,
            recipients,
            send.category,
            send.since,
            limit,
            poll_policy,
            retry_policy,
            clock,
            sleep,
            None,
        )
        result.send_id, result.send_recorded, result.by_hash = send.send_id, True, True
    finally:
        if owned:
            wh.close()
    return _finish(result, notify, notifier, raise_on_timeout)


def _finish(result: WatchResult, notify: bool, notifier, raise_on_timeout: bool) -> WatchResult:
    if notify:
        result.notification = _notify(notifier, result)
    if result.timed_out and raise_on_timeout:
        raise WatchTimeout(result)
    return result


def _notify(notifier, result: WatchResult):
    """Post the summary; a failing notifier is logged and never loses the result."""
    try:
        return notifier.post_watch_summary(result)
    except Exception as exc:  # a custom notifier's bug must not lose an hour's watch
        log.error(
            "posting the watch summary failed (%s: %s); the result is returned anyway",
            type(exc).__name__,
            exc,
        )
        return None


def wait_for_events(
    email_list: Iterable[str],
    category: str,
    timestamp,
    *,
    timeout: float | None = None,
    warehouse: "str | Warehouse | None" = None,
    notify: bool = True,
    raise_on_timeout: bool = False,
    **options: Any,
) -> dict[str, int]:
    """Counts per outcome for the recipients of a send, once settled or at the timeout:
    ``{'delivered', 'bounce', 'dropped', 'deferred', 'unsettled'}`` (recipients, not
    events). Same arguments as :func:`watch`; on timeout the counts so far are returned
    (``raise_on_timeout=True``: :class:`WatchTimeout`, a TimeoutError, with ``.result``)."""
    return watch(
        email_list,
        category,
        timestamp,
        timeout=timeout,
        warehouse=warehouse,
        notify=notify,
        raise_on_timeout=raise_on_timeout,
        **options,
    ).counts


def already_sent(
    email_list: Iterable[str],
    category: str,
    since,
    *,
    warehouse: "str | Warehouse | None" = None,
    hasher: EmailHasher | None = None,
    retry_policy: Backoff = DEFAULT_RETRY_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
) -> set[str]:
    """The addresses of ``email_list`` (as given) that already have mail of ``category``
    since ``since``: any processed, deferred, delivered, dropped, bounce or engagement
    event. Use it before a send to avoid sending twice."""
    environ = os.environ if environ is None else environ
    category = _check_category(category)
    since_ts = to_utc(since)
    wh, owned = _resolve_warehouse(warehouse, environ)
    try:
        recipients = _Recipients(email_list, _resolve_hasher(hasher, wh, environ))
        if not recipients:
            return set()
        rows = _with_retries(
            lambda: _run_query(wh, ALREADY_SENT_SQL, category, since_ts, recipients.hashes),
            retry_policy,
            sleep,
            lambda exc: None,
        )
    finally:
        if owned:
            wh.close()
    return {recipients.by_hash[r["email_hash"]] for r in rows}


def _poll_until_settled(
    wh: Warehouse,
    recipients: _Recipients,
    category: str,
    since: datetime,
    timeout: float,
    poll_policy: Backoff,
    retry_policy: Backoff,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    recorder: _SendRecorder | None = None,
) -> WatchResult:
    start = clock()
    deadline = start + timeout
    delays = poll_policy.delays()
    hashes = recipients.hashes
    polls = errors = 0
    last: WatchResult | None = None
    ready = False  # the events table exists (checked until it does)
    other: dict[str, int] = {}
    uncategorized = 0
    told: set[str] = set()  # hints already logged

    def count_error(exc: BaseException) -> None:
        nonlocal errors
        errors += 1

    def tell(text: str) -> None:
        if text not in told:
            told.add(text)
            log.warning("watch %r: %s", category, text)

    def poll() -> list[dict[str, Any]]:
        nonlocal ready, other, uncategorized
        if not hashes:
            return []
        if not ready:
            ready = wh.table_exists("events")
            if not ready:
                return []
        if recorder is not None and recorder.pending:
            recorder.attempt(wh)  # never raises; tried again next poll if the file was busy
        rows = _run_query(wh, STATUS_SQL, category, since, hashes)
        if rows:
            other, uncategorized = {}, 0
        elif not other and not uncategorized:
            other, uncategorized = _other_categories(wh, since, hashes)
        return rows

    while True:
        try:
            rows = _with_retries(poll, retry_policy, sleep, count_error, clock)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise WatchFailed(
                f"the warehouse {getattr(wh, 'uri', wh)} kept failing ({errors} transient "
                f"errors; last: {exc}); the watch stopped after {polls} successful polls. "
                "Check the warehouse (a long load holding the DuckDB file? BigQuery "
                "outage?) and rerun the watch; the result so far is in .result",
                last,
            ) from exc
        polls += 1
        now = clock()
        result = _build_result(
            recipients, rows, category, since, now - start, timeout, polls, errors
        )
        result.warehouse_ready = ready or not hashes
        if not result.warehouse_ready:
            result.hint = missing_warehouse_hint(wh)
        elif not rows:
            result.other_categories, result.uncategorized = dict(other), uncategorized
            result.hint = category_hint(category, len(recipients), other, uncategorized)
        if result.hint:
            tell(result.hint)
        log.info("watch %r poll %d: %s", category, polls, result.counts)
        if result.settled:
            return result
        if now >= deadline:
            result.timed_out = True
            return result
        last = result
        delay = next(delays, None)
        if delay is None:  # a poll policy with an attempts limit: that was the last poll
            result.timed_out = True
            return result
        sleep(max(0.0, min(delay, deadline - now)))


def _build_result(
    recipients: _Recipients,
    rows: list[dict[str, Any]],
    category: str,
    since: datetime,
    elapsed: float,
    timeout: float,
    polls: int,
    errors: int,
) -> WatchResult:
    by_hash = {r["email_hash"]: r for r in rows}
    outcomes: dict[str, RecipientOutcome] = {}
    for h, email in recipients.by_hash.items():
        r = by_hash.get(h)
        if r is None:
            outcomes[email] = RecipientOutcome(email=email, status=None)
        else:
            outcomes[email] = RecipientOutcome(
                email=email,
                status=r["status"],
                event_type=r["event_type"],
                bounce_class=r["bounce_class"],
                reason=r["reason"],
                smtp_status=r["smtp_status"],
                event_ts=r["event_ts"],
                provider=r["provider"],
            )
    settled = all(o.settled for o in outcomes.values())
    return WatchResult(
        category=category,
        since=since,
        recipients=len(recipients),
        outcomes=outcomes,
        elapsed=elapsed,
        settled=settled,
        timed_out=False,
        timeout=timeout,
        polls=polls,
        transient_errors=errors,
        duplicates_in_list=recipients.duplicates,
    )


__all__ = [
    "wait_for_events",
    "watch",
    "resume",
    "already_sent",
    "default_send_id",
    "logged_send",
    "LoggedSend",
    "WatchResult",
    "RecipientOutcome",
    "WatchTimeout",
    "WatchFailed",
    "DEFAULT_POLL_POLICY",
    "category_hint",
    "DEFAULT_RETRY_POLICY",
    "default_timeout",
    "is_transient",
    "COUNT_KEYS",
]
