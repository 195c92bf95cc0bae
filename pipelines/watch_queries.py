"""What a watch asks the warehouse: the status, already-sent and other-categories SQL
(BigQuery SQL; the DuckDB backend translates), their parameters in chunks of hashes, the
hints a user needs when nothing is seen, and the retrying of a query's transient errors."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping

from .backoff import Backoff, retry_call
from .status import rank_case_sql, status_case_sql
from .warehouse import TransientWarehouseError, Warehouse, WarehouseError

#: The watcher's log: everything a watch says is under one logger name.
log = logging.getLogger("pipelines.watcher")

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
