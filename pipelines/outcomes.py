"""The outcomes job: recompute the derived tables from ``events`` for a date range.

The SQL lives in ``queries/<table>/query.sql`` (BigQuery Standard SQL) with a
``metadata.yaml`` beside it (description, inputs, parameters with defaults,
partitioning, clustering). :func:`compute_outcomes` replaces exactly the partitions in
[start, end] of every derived table in ONE transaction
(``Warehouse.replace_partitions_many``): a run killed half-way leaves all tables as they
were, rerunning a range gives the same tables, and a window of several days picks up
late events.

Window settings, one name per meaning (shared by ``mailpulse run``, ``mailpulse
outcomes`` and the DAGs):

- ``window_days`` (:data:`WINDOW_DAYS`, 4): how many partitions a run recomputes, ending
  at its end date (``D-3 .. D``): events that arrive up to 72 h late land.
- ``days_read_before`` / ``days_read_after`` (query parameters, metadata.yaml): context
  read around the window; they never change which partitions are written.
- late settlement: :func:`late_status_partitions` finds the older ``recipient_status``
  partitions whose recipients received events in the window (a row lives in the
  partition of the recipient's first send event), and ``compute_outcomes(...,
  status_partitions=...)`` recomputes them in the same transaction.

>>> compute_outcomes("duckdb:///tmp/w.duckdb", date(2026, 11, 20), date(2026, 11, 23))
>>> read_outcomes("duckdb:///tmp/w.duckdb", date(2026, 11, 20), date(2026, 11, 23))
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

import pipelines

from .warehouse import Warehouse, WarehouseError, open_warehouse

log = logging.getLogger(__name__)

#: Where the SQL lives: ``queries/`` beside the package (override with ``queries_dir``).
QUERIES_DIR = Path(pipelines.__file__).resolve().parent.parent / "queries"

#: The derived tables, in the order the job computes them.
TABLES = ("recipient_status", "delivery_outcomes", "domain_outcomes", "suppressions")

#: Partitions a run recomputes, ending at its end date (D-3 .. D): events that arrive up
#: to 72 hours late (deferrals, webhook retries) land in partitions that are recomputed.
WINDOW_DAYS = 4

#: Deprecated (the days before the end date): use WINDOW_DAYS.
DEFAULT_LOOKBACK_DAYS = WINDOW_DAYS - 1

#: The send events that place a recipient_status row (its first one's date).
SEND_EVENT_TYPES = ("processed", "dropped", "deferred", "delivered", "bounce")

#: Old parameter names still accepted by :func:`compute_outcomes` (renamed: "lookback"
#: meant three things).
RENAMED_PARAMS = {"lookback_days": "days_read_before", "lookahead_days": "days_read_after"}

#: delivery_outcomes count columns, in SendGrid's order, then the split and extras.
COUNT_COLUMNS = (
    "requests",
    "processed",
    "delivered",
    "bounces",
    "bounces_hard",
    "bounces_soft",
    "bounces_undetermined",
    "blocks",
    "deferred",
    "drops",
    "bounce_drops",
    "spam_report_drops",
    "unsubscribe_drops",
    "invalid_emails",
    "opens",
    "unique_opens",
    "clicks",
    "unique_clicks",
    "spam_reports",
    "unsubscribes",
)
RATE_COLUMNS = (
    "delivered_rate",
    "bounce_rate",
    "block_rate",
    "deferred_rate",
    "drop_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "spam_report_rate",
    "unsubscribe_rate",
)
KEY_COLUMNS = ("event_date", "category", "provider")

_PARAM_TYPES = {"DATE": date, "INT64": int, "STRING": str, "FLOAT64": float, "BOOL": bool}


@dataclass(frozen=True)
class Query:
    """One derived table: its SQL and what its metadata file says."""

    table: str
    sql: str
    description: str
    partition_column: str
    cluster_by: tuple[str, ...]
    #: name -> (BigQuery type, default or None when required)
    parameters: dict[str, tuple[str, Any]] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()

    def bind(self, start: date, end: date, **params: Any) -> dict[str, Any]:
        """Query parameters: start/end plus defaults, overridden by ``params``.

        Parameters this query does not declare are ignored (one ``compute_outcomes`` call
        passes every table's parameters); values are checked against declared types."""
        out: dict[str, Any] = {"start_date": start, "end_date": end}
        for name, (typ, default) in self.parameters.items():
            if name in out:
                continue
            value = params.get(name, default)
            if value is None:
                raise ValueError(
                    f"{self.table}: parameter {name!r} has no default; pass {name}=..."
                )
            want = _PARAM_TYPES.get(typ)
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(
                    f"{self.table}: parameter {name!r} must be an integer, got {value!r}"
                )
            if want is int and value < 0:
                raise ValueError(
                    f"{self.table}: parameter {name!r} must not be negative, got {value}"
                )
            out[name] = value
        return out


def queries_folder(override: str | Path | None = None) -> Path:
    d = Path(override) if override is not None else QUERIES_DIR
    if not d.is_dir():
        raise WarehouseError(
            f"no queries folder at {d}; run from a mailpulse checkout (pip install -e .) "
            "or pass queries_dir="
        )
    return d


@functools.lru_cache(maxsize=32)
def _load(table: str, folder: str) -> Query:
    d = Path(folder) / table
    sql_path, meta_path = d / "query.sql", d / "metadata.yaml"
    if not sql_path.is_file() or not meta_path.is_file():
        raise WarehouseError(f"query {table!r} needs {sql_path} and {meta_path}")
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    params = {
        p["name"]: (p.get("type", "STRING"), p.get("default")) for p in meta.get("parameters", [])
    }
    part = (meta.get("partitioning") or {}).get("field", "event_date")
    return Query(
        table=table,
        sql=sql_path.read_text(encoding="utf-8"),
        description=str(meta.get("description", "")).strip(),
        partition_column=part,
        cluster_by=tuple(meta.get("clustering") or ()),
        parameters=params,
        inputs=tuple(meta.get("inputs") or ()),
    )


def load_query(table: str, queries_dir: str | Path | None = None) -> Query:
    """The query for ``table`` from ``queries/<table>/``."""
    return _load(table, str(queries_folder(queries_dir)))


def window_ending(end: date, window_days: int = WINDOW_DAYS) -> tuple[date, date]:
    """The ``window_days`` partitions ending at ``end``: [end - (window_days - 1), end]."""
    if isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1:
        raise ValueError(f"window_days must be a whole number >= 1, got {window_days!r}")
    return end - timedelta(days=window_days - 1), end


def default_range(today: date | None = None, window_days: int = WINDOW_DAYS) -> tuple[date, date]:
    """The window ending today (UTC): :func:`window_ending`."""
    return window_ending(today or datetime.now(timezone.utc).date(), window_days)


def _check_range(start: date, end: date) -> None:
    if not isinstance(start, date) or not isinstance(end, date):
        raise ValueError(f"start and end must be dates, got {start!r} and {end!r}")
    if isinstance(start, datetime) or isinstance(end, datetime):
        raise ValueError("start and end must be dates, not datetimes")
    if end < start:
        raise ValueError(f"end {end} is before start {start}; swap them")


def compute_outcomes(
    warehouse: str | Warehouse,
    start: date,
    end: date,
    *,
    tables: tuple[str, ...] = TABLES,
    queries_dir: str | Path | None = None,
    status_partitions: "list[date] | tuple[date, ...]" = (),
    **params: Any,
) -> dict[str, int]:
    """Recompute the partitions [start, end] of each derived table, all tables in ONE
    transaction (a crash leaves every table as it was).

    ``status_partitions``: older ``recipient_status`` partitions to recompute as well, in
    the same transaction (from :func:`late_status_partitions`: recipients whose mail
    settled days after their first send event); each is read up to ``end``.
    ``params`` override the queries' defaults (``days_read_before``, ``days_read_after``,
    ``soft_bounce_threshold``, ``soft_bounce_days``); a name no query declares is an
    error. Returns rows written per table. Idempotent: a rerun writes the same rows.
    """
    from .warehouse.base import PartitionReplacement

    _check_range(start, end)
    for old, new in RENAMED_PARAMS.items():
        if old in params:
            import warnings

            warnings.warn(
                f"compute_outcomes: {old} is now called {new}", DeprecationWarning, stacklevel=2
            )
            params.setdefault(new, params.pop(old))
    wh = open_warehouse(warehouse)
    queries = [load_query(t, queries_dir) for t in tables]
    known = {n for q in queries for n in q.parameters} - {"start_date", "end_date"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    wh.ensure_schema()
    items: list = []
    for q in queries:
        items.append(
            PartitionReplacement(
                q.table,
                q.sql,
                q.bind(start, end, **params),
                start,
                end,
                q.partition_column,
                q.cluster_by,
            )
        )
        if q.table == "recipient_status":
            for a, b in _ranges(d for d in status_partitions if not start <= d <= end):
                bound = q.bind(a, b, **params)
                # read up to the window's end: that is where the late events are
                bound["days_read_after"] = max(int(bound.get("days_read_after", 0)), (end - b).days)
                items.append(
                    PartitionReplacement(
                        q.table, q.sql, bound, a, b, q.partition_column, q.cluster_by
                    )
                )
    counts = wh.replace_partitions_many(items)
    written: dict[str, int] = {}
    for it, n in zip(items, counts):
        log.info("%s: %d rows for %s..%s", it.table, n, it.start, it.end)
        written[it.table] = written.get(it.table, 0) + n
    return written


def _ranges(days) -> list[tuple[date, date]]:
    """Sorted distinct dates as maximal runs of consecutive days."""
    out: list[tuple[date, date]] = []
    for d in sorted(set(days)):
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


#: The recipient_status partitions (first-send dates) before @start_date of recipients
#: that received events in [@start_date, @end_date], searched @days_read_before days back.
LATE_STATUS_PARTITIONS_SQL = f"""
WITH touched AS (
  SELECT DISTINCT provider, message_id, email_hash
  FROM events
  WHERE event_date BETWEEN @start_date AND @end_date
),
first_send AS (
  SELECT e.provider, e.message_id, e.email_hash, MIN(e.event_date) AS first_date
  FROM events AS e
  JOIN touched AS t
    ON t.provider = e.provider AND t.message_id = e.message_id AND t.email_hash = e.email_hash
  WHERE e.event_date BETWEEN DATE_SUB(@start_date, INTERVAL @days_read_before DAY) AND @end_date
    AND e.event_type IN ({", ".join(repr(t) for t in SEND_EVENT_TYPES)})
  GROUP BY e.provider, e.message_id, e.email_hash
)
SELECT DISTINCT first_date AS event_date
FROM first_send
WHERE first_date < @start_date
ORDER BY event_date
"""


def late_status_partitions(
    warehouse: str | Warehouse,
    start: date,
    end: date,
    *,
    days_read_before: int | None = None,
    queries_dir: str | Path | None = None,
) -> list[date]:
    """The ``recipient_status`` partitions before ``start`` that events in [start, end]
    change: recipients whose first send event was earlier (a deferral that settles on its
    third day, a late bounce). Pass them to ``compute_outcomes(status_partitions=...)``.
    Searches ``days_read_before`` days back (the recipient_status default, 4)."""
    _check_range(start, end)
    wh = open_warehouse(warehouse)
    if days_read_before is None:
        days_read_before = int(
            load_query("recipient_status", queries_dir).parameters["days_read_before"][1]
        )
    if not wh.table_exists("events"):
        return []
    rows = wh.query(
        LATE_STATUS_PARTITIONS_SQL,
        {"start_date": start, "end_date": end, "days_read_before": days_read_before},
    )
    return [r["event_date"] for r in rows.to_pylist()]


def _read(wh: Warehouse, table: str, sql: str, params: dict[str, Any]):
    if not wh.table_exists(table):
        raise WarehouseError(
            f"{table} does not exist in {wh.uri or wh!r}; run `mailpulse outcomes` "
            "(or compute_outcomes) first"
        )
    return wh.query_df(sql, params)


def read_outcomes(warehouse: str | Warehouse, start: date, end: date):
    """``delivery_outcomes`` rows for [start, end] as a pandas DataFrame, ordered by
    event_date, category, provider."""
    _check_range(start, end)
    wh = open_warehouse(warehouse)
    return _read(
        wh,
        "delivery_outcomes",
        "SELECT * FROM delivery_outcomes WHERE event_date BETWEEN @start_date AND @end_date "
        "ORDER BY event_date, category, provider",
        {"start_date": start, "end_date": end},
    )


def read_suppressions(warehouse: str | Warehouse, since: date, until: date | None = None):
    """One row per suppressed recipient qualified in [since, until]: email_hash,
    recipient_domain, reasons (sorted), first_seen, last_seen."""
    until = until or datetime.now(timezone.utc).date()
    _check_range(since, until)
    wh = open_warehouse(warehouse)
    return _read(
        wh,
        "suppressions",
        """
        SELECT email_hash, MAX(recipient_domain) AS recipient_domain,
               ARRAY_AGG(DISTINCT reason ORDER BY reason) AS reasons,
               MIN(first_seen) AS first_seen, MAX(last_seen) AS last_seen
        FROM suppressions
        WHERE event_date BETWEEN @start_date AND @end_date
        GROUP BY email_hash
        ORDER BY email_hash""",
        {"start_date": since, "end_date": until},
    )


def summarize_by_category(df):
    """Per category (dates and providers summed): the counts, with rates recomputed
    from the sums. Unique opens/clicks are sums of daily uniques."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(columns=["category", "providers", *COUNT_COLUMNS, *RATE_COLUMNS])
    g = df.groupby("category", sort=True)
    out = g[list(COUNT_COLUMNS)].sum().astype("int64")
    out.insert(0, "providers", g["provider"].agg(lambda s: ",".join(sorted(set(s)))))
    out = out.reset_index()

    def rate(a, b):
        return (out[a] / out[b]).where(out[b] != 0)

    out["delivered_rate"] = rate("delivered", "requests")
    out["bounce_rate"] = rate("bounces", "requests")
    out["block_rate"] = rate("blocks", "requests")
    out["deferred_rate"] = rate("deferred", "requests")
    out["drop_rate"] = rate("drops", "requests")
    out["open_rate"] = rate("unique_opens", "delivered")
    out["click_rate"] = rate("unique_clicks", "delivered")
    out["click_to_open_rate"] = rate("unique_clicks", "unique_opens")
    out["spam_report_rate"] = rate("spam_reports", "delivered")
    out["unsubscribe_rate"] = rate("unsubscribes", "delivered")
    return out
