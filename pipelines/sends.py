"""The send log: what was sent, to whom, when, so the provider's events can be matched to
it (and a recipient the provider never reported told apart from one not reported yet).

One row per (send, recipient[, message]) in the ``sends`` table, on both backends:

================  =========  ==========================================================
send_id           STRING     the caller's name for one send (a campaign run, a batch)
message_id        STRING     the provider's message id when known, normalised as events'
email_hash        STRING     keyed hash of the address (MAILPULSE_HASH_KEY), never the address
recipient_domain  STRING     the part after ``@``
category          STRING     the category / campaign the mail was sent with
provider          STRING     sendgrid | ses | cmc when known
sent_at           TIMESTAMP  when it was sent (UTC)
sent_date         DATE       UTC date of sent_at; the partition
recorded_at       TIMESTAMP  when it was recorded
================  =========  ==========================================================

Recording is idempotent: a (send_id, email_hash, message_id) already in the log is not
added again, whatever its time, so importing a file twice, or a script recording a batch
again after a crash, adds nothing.

>>> record_sends(["ann@example.com", "bob@example.jp"], send_id="spring-1",
...              category="spring-sale", warehouse="duckdb:///w.duckdb")
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa

from .events import Field, arrow_schema, bigquery_schema
from .hashing import EmailHasher, recipient_domain, resolve_key
from .status import rank_case_sql, status_case_sql
from .warehouse import Warehouse, WarehouseError, open_warehouse

TABLE = "sends"

SEND_FIELDS: tuple[Field, ...] = (
    Field("send_id", "STRING", "REQUIRED", "The caller's name for one send (campaign run, batch)"),
    Field("message_id", "STRING", "NULLABLE", "Provider message id when known, normalised"),
    Field(
        "email_hash",
        "STRING",
        "REQUIRED",
        "HMAC-SHA256 hex of the trimmed, lower-cased address (MAILPULSE_HASH_KEY)",
    ),
    Field("recipient_domain", "STRING", "NULLABLE", "The recipient's domain, lower-cased"),
    Field("category", "STRING", "NULLABLE", "Category / campaign the mail was sent with"),
    Field("provider", "STRING", "NULLABLE", "sendgrid | ses | cmc, when known"),
    Field("sent_at", "TIMESTAMP", "REQUIRED", "When it was sent (UTC)"),
    Field("sent_date", "DATE", "REQUIRED", "UTC date of sent_at; the partition column"),
    Field("recorded_at", "TIMESTAMP", "REQUIRED", "When it was recorded (UTC)"),
)
SEND_SCHEMA = arrow_schema(SEND_FIELDS)
PARTITION = "sent_date"
CLUSTERING = ("send_id", "email_hash")
PROVIDERS = ("sendgrid", "ses", "cmc")

#: SendGrid's per-delivery suffix of sg_message_id (as the SendGrid normalizer cuts it).
_SENDGRID_FILTER = re.compile(r"\.(?:st)?filter", re.IGNORECASE)


class SendsError(ValueError):
    """A send record that cannot be stored; the message names the record and the fix."""


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_sends` did: rows added, rows already in the log, repeats in
    the input (the same recipient and message twice), and the send ids involved."""

    recorded: int
    already_recorded: int
    duplicates: int
    send_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "already_recorded": self.already_recorded,
            "duplicates": self.duplicates,
            "send_ids": list(self.send_ids),
        }


def normalize_message_id(value: Any, provider: str | None = None) -> str | None:
    """The id the provider's events carry: trimmed, without ``<...>`` (CMC, SMTP ids), and
    for SendGrid without the ``.filter...`` per-delivery suffix (the X-Message-Id of the
    API response is already the bare id)."""
    if value is None:
        return None
    v = str(value).strip().strip("<>").strip()
    if not v:
        return None
    if provider in (None, "sendgrid"):
        m = _SENDGRID_FILTER.search(v)
        if m and m.start() > 0:
            v = v[: m.start()]
    return v


def _utc(value: Any, what: str) -> datetime:
    """A send time as aware UTC (:func:`pipelines.timeutil.to_utc`'s rules: ISO 8601, epoch
    seconds, a datetime or a date; without an offset, UTC)."""
    from .timeutil import to_utc

    if isinstance(value, str) and not value.strip():
        raise SendsError(f"{what}: {value!r} is not a time")
    try:
        return to_utc(value)
    except (ValueError, OverflowError, OSError):
        raise SendsError(
            f"{what}: {value!r} is not a time; use ISO 8601 (2026-11-23T10:00:00Z) or epoch seconds"
        ) from None
    except TypeError:
        raise SendsError(f"{what}: {value!r} is not a time") from None


def send_rows(
    records: Iterable[str | Mapping[str, Any]],
    *,
    hasher: EmailHasher,
    send_id: str | None = None,
    category: str | None = None,
    provider: str | None = None,
    sent_at: Any = None,
    now: datetime | None = None,
) -> tuple[pa.Table, int]:
    """Hash and check the records (an address, or a mapping with ``email`` and optional
    ``message_id``, ``send_id``, ``category``, ``provider``, ``sent_at``; the keyword
    arguments are the defaults). Returns (rows as Arrow in SEND_SCHEMA, repeats dropped)."""
    if isinstance(records, (str, bytes)):
        raise TypeError(
            "records must be a list of addresses or send records, not one "
            "string (wrap a single address in a list)"
        )
    now = now or datetime.now(timezone.utc)
    default_ts = _utc(sent_at, "sent_at") if sent_at is not None else now
    cols: dict[str, list] = {f.name: [] for f in SEND_FIELDS}
    seen: set[tuple[str, str, str]] = set()
    dupes = 0
    for i, rec in enumerate(records):
        what = f"record {i + 1}"
        if isinstance(rec, str):
            rec = {"email": rec}
        if not isinstance(rec, Mapping):
            raise TypeError(
                f"{what} is {type(rec).__name__}; give an address or a mapping with 'email'"
            )
        address = rec.get("email")
        if not isinstance(address, str) or "@" not in address.strip():
            raise SendsError(
                f"{what}: no address in 'email' ({address!r}); every send "
                "record names its recipient"
            )
        sid = rec.get("send_id") or send_id
        if not isinstance(sid, str) or not sid.strip():
            raise SendsError(
                f"{what}: no send_id; name the send with send_id= (the "
                "command: --send-id ID) or a send_id column"
            )
        prov = rec.get("provider") or provider
        if prov is not None and prov not in PROVIDERS:
            raise SendsError(f"{what}: provider {prov!r} is not one of {', '.join(PROVIDERS)}")
        cat = rec.get("category") or category
        h = hasher.hash(address)
        mid = normalize_message_id(rec.get("message_id"), prov)
        key = (sid.strip(), h, mid or "")
        if key in seen:
            dupes += 1
            continue
        seen.add(key)
        ts = (
            _utc(rec["sent_at"], f"{what}: sent_at")
            if rec.get("sent_at") not in (None, "")
            else default_ts
        )
        cols["send_id"].append(key[0])
        cols["message_id"].append(mid)
        cols["email_hash"].append(h)
        cols["recipient_domain"].append(recipient_domain(address))
        cols["category"].append(cat.strip() if isinstance(cat, str) and cat.strip() else None)
        cols["provider"].append(prov)
        cols["sent_at"].append(ts)
        cols["sent_date"].append(ts.date())
        cols["recorded_at"].append(now)
    return pa.Table.from_pydict(cols, schema=SEND_SCHEMA), dupes


def record_sends(
    records: Iterable[str | Mapping[str, Any]],
    *,
    send_id: str | None = None,
    category: str | None = None,
    provider: str | None = None,
    sent_at: Any = None,
    warehouse: "str | Warehouse | None" = None,
    hasher: EmailHasher | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Recorded:
    """Add sends to the log (see the module docstring). ``records``: addresses, or
    mappings with ``email`` and optionally ``message_id``, ``send_id``, ``category``,
    ``provider``, ``sent_at`` (the keyword arguments fill what a record leaves out;
    ``sent_at`` defaults to now). Addresses are hashed here; only hashes are stored."""
    environ = os.environ if environ is None else environ
    if warehouse is None:
        from .config import default_warehouse_uri

        warehouse = default_warehouse_uri(environ)
    owned = not isinstance(warehouse, Warehouse)
    wh = open_warehouse(warehouse)
    try:
        if hasher is None:
            hasher = EmailHasher(resolve_key(environ, embedded=wh.dialect == "duckdb"))
        now = clock() if clock else datetime.now(timezone.utc)
        rows, dupes = send_rows(
            records,
            hasher=hasher,
            send_id=send_id,
            category=category,
            provider=provider,
            sent_at=sent_at,
            now=now,
        )
        ids = tuple(sorted(set(rows.column("send_id").to_pylist())))
        if rows.num_rows == 0:
            return Recorded(0, 0, dupes, ids)
        added = _append(wh, rows)
        return Recorded(added, rows.num_rows - added, dupes, ids)
    finally:
        if owned:
            wh.close()


def read_sends(
    warehouse: "str | Warehouse",
    send_id: str,
    *,
    since: date | None = None,
    until: date | None = None,
):
    """The log rows of one send as a DataFrame (ordered by sent_at, email_hash)."""
    wh = open_warehouse(warehouse)
    if not wh.table_exists(TABLE):
        raise WarehouseError(
            f"no send log in {wh.uri or wh!r}; record sends first "
            "(record_sends(...) or `mailpulse sends import FILE`)"
        )
    return wh.query_df(
        "SELECT * FROM sends WHERE sent_date BETWEEN @since AND @until AND send_id = @send_id "
        "ORDER BY sent_at, email_hash, message_id",
        {
            "since": since or date(2000, 1, 1),
            "until": until or date(9999, 12, 31),
            "send_id": send_id,
        },
    )


# -- what happened to a send ----------------------------------------------------------------
#: Days after a recipient's send time in which the provider's events count as reporting
#: it (deferrals retry for up to 72 hours, as the outcomes window assumes).
REPORT_DAYS = 4

#: Each logged recipient of each send in [@start_date, @end_date] (sent_date) with the
#: most final of its matching events, by the watcher's forward-only rules
#: (pipelines/status.py; NULL status: no event at all, "sent, never reported by the
#: provider"). An event matches a log row when it is the same recipient, from the row's
#: send time to @report_days days after it, and of the row's message id, provider and
#: category where the row names them. Only events in [@start_date, @events_until] are read.
SEND_RECIPIENTS_SQL = f"""
WITH sent AS (
  SELECT send_id, email_hash, message_id, category, provider, recipient_domain, sent_at
  FROM sends
  WHERE sent_date BETWEEN @start_date AND @end_date
    AND (@send_id = '' OR send_id = @send_id)
),
recipients AS (
  SELECT send_id, email_hash, MIN(recipient_domain) AS recipient_domain,
    MIN(category) AS category, MIN(provider) AS provider, MIN(sent_at) AS sent_at
  FROM sent
  GROUP BY send_id, email_hash
),
reported AS (
  SELECT event_id, email_hash, message_id, provider, categories, event_type, bounce_class,
    event_ts, {rank_case_sql("event_type")} AS status_rank,
    {status_case_sql("event_type")} AS status
  FROM events
  WHERE event_date BETWEEN @start_date AND @events_until
    AND email_hash IS NOT NULL
    AND {rank_case_sql("event_type")} > 0
),
matched AS (
  SELECT s.send_id, s.email_hash, e.event_id, e.event_type, e.bounce_class, e.event_ts,
    e.status_rank, e.status
  FROM sent AS s
  JOIN reported AS e
    ON e.email_hash = s.email_hash
    AND e.event_ts >= s.sent_at
    AND e.event_ts < TIMESTAMP_ADD(s.sent_at, INTERVAL @report_days DAY)
    AND (s.message_id IS NULL OR e.message_id = s.message_id)
    AND (s.provider IS NULL OR e.provider = s.provider)
    AND (s.category IS NULL OR s.category IN UNNEST(e.categories))
),
final AS (
  SELECT send_id, email_hash, status, bounce_class, event_ts AS status_event_ts
  FROM (
    SELECT send_id, email_hash, status, bounce_class, event_ts,
      ROW_NUMBER() OVER (
        PARTITION BY send_id, email_hash
        ORDER BY status_rank DESC, event_ts DESC, event_id DESC) AS rn
    FROM matched
  ) AS ranked
  WHERE rn = 1
),
engaged AS (
  SELECT send_id, email_hash,
    MAX(IF(event_type = 'open', 1, 0)) AS opened,
    MAX(IF(event_type = 'click', 1, 0)) AS clicked
  FROM matched
  GROUP BY send_id, email_hash
)
SELECT r.send_id, r.email_hash, r.recipient_domain, r.category, r.provider, r.sent_at,
  f.status, IF(f.status = 'bounce', IFNULL(f.bounce_class, 'undetermined'), NULL)
    AS bounce_class,
  f.status_event_ts, IFNULL(g.opened, 0) AS opened, IFNULL(g.clicked, 0) AS clicked
FROM recipients AS r
LEFT JOIN final AS f ON f.send_id = r.send_id AND f.email_hash = r.email_hash
LEFT JOIN engaged AS g ON g.send_id = r.send_id AND g.email_hash = r.email_hash
"""

#: SEND_RECIPIENTS_SQL counted per send, category, provider and recipient domain (each
#: recipient once, at its most final status): delivered + bounces + blocks + drops +
#: deferred + accepted_only + never_reported = sent. (SUM(IF(...)), not COUNTIF: DuckDB's
#: COUNT_IF gives NULL, not 0, over a group whose conditions are all NULL.)
SEND_OUTCOMES_SQL = f"""
SELECT send_id, category, provider, recipient_domain,
  MIN(sent_at) AS first_sent_at, MAX(sent_at) AS last_sent_at,
  TIMESTAMP_ADD(MAX(sent_at), INTERVAL @report_days DAY) AS report_until,
  COUNT(*) AS sent,
  SUM(IF(status IS NOT NULL, 1, 0)) AS reported,
  SUM(IF(status IS NULL, 1, 0)) AS never_reported,
  SUM(IF(status = 'delivered', 1, 0)) AS delivered,
  SUM(IF(status = 'bounce' AND bounce_class != 'block', 1, 0)) AS bounces,
  SUM(IF(bounce_class = 'hard', 1, 0)) AS bounces_hard,
  SUM(IF(bounce_class = 'soft', 1, 0)) AS bounces_soft,
  SUM(IF(bounce_class = 'undetermined', 1, 0)) AS bounces_undetermined,
  SUM(IF(bounce_class = 'block', 1, 0)) AS blocks,
  SUM(IF(status = 'dropped', 1, 0)) AS drops,
  SUM(IF(status = 'deferred', 1, 0)) AS deferred,
  SUM(IF(status = 'processed', 1, 0)) AS accepted_only,
  SUM(opened) AS opened,
  SUM(clicked) AS clicked
FROM ({SEND_RECIPIENTS_SQL}) AS per_recipient
GROUP BY send_id, category, provider, recipient_domain
"""

#: The send view's count columns (recipients of the log), in output order.
SEND_COUNT_COLUMNS = (
    "sent",
    "reported",
    "never_reported",
    "delivered",
    "bounces",
    "bounces_hard",
    "bounces_soft",
    "bounces_undetermined",
    "blocks",
    "drops",
    "deferred",
    "accepted_only",
    "opened",
    "clicked",
)
#: rate -> (numerator, denominator); the outcomes definitions with ``sent`` (the log's
#: recipients) as the requests: bounce_rate excludes blocks, engagement divides by delivered.
SEND_RATES = {
    "reported_rate": ("reported", "sent"),
    "never_reported_rate": ("never_reported", "sent"),
    "delivered_rate": ("delivered", "sent"),
    "bounce_rate": ("bounces", "sent"),
    "block_rate": ("blocks", "sent"),
    "drop_rate": ("drops", "sent"),
    "open_rate": ("opened", "delivered"),
    "click_rate": ("clicked", "delivered"),
}
#: ``by`` of :func:`summarize_sends` -> the key columns of its rows.
SEND_BY = {"send": ("send_id",), "mailbox": ("send_id", "mailbox_provider")}


def _no_log(wh: Warehouse) -> WarehouseError:
    return WarehouseError(
        f"no send log in {wh.uri or wh!r}; record sends first "
        "(record_sends(...), `mailpulse sends import FILE`, or `mailpulse watch`)"
    )


def send_dates(warehouse: "str | Warehouse", send_id: str | None = None):
    """(first, last) sent_date of one send, or of the whole log without ``send_id``;
    (None, None) when there is none."""
    wh = open_warehouse(warehouse)
    if not wh.table_exists(TABLE):
        raise _no_log(wh)
    row = wh.query(
        "SELECT MIN(sent_date) AS lo, MAX(sent_date) AS hi FROM sends "
        "WHERE sent_date BETWEEN @since AND @until AND (@send_id = '' OR send_id = @send_id)",
        {"since": date(2000, 1, 1), "until": date(9999, 12, 31), "send_id": send_id or ""},
    ).to_pylist()[0]
    return row["lo"], row["hi"]


def _send_params(wh, start, end, send_id, report_days) -> dict[str, Any]:
    if isinstance(report_days, bool) or not isinstance(report_days, int) or report_days < 1:
        raise ValueError(f"report_days must be a whole number >= 1, got {report_days!r}")
    if send_id is not None and (not isinstance(send_id, str) or not send_id.strip()):
        raise ValueError("send_id must be a non-empty string (the send's name in the log)")
    if not wh.table_exists(TABLE):
        raise _no_log(wh)
    if start is None or end is None:
        lo, hi = send_dates(wh, send_id)
        if lo is None:
            raise WarehouseError(
                f"send {send_id!r} is not in the send log of {wh.uri or wh!r}; check the id "
                "(printed by `mailpulse watch` and `mailpulse sends import`)"
                if send_id
                else f"the send log of {wh.uri or wh!r} is empty"
            )
        start, end = start or lo, end or hi
    if end < start:
        raise ValueError(f"end {end} is before start {start}; swap them")
    return {
        "start_date": start,
        "end_date": end,
        "events_until": end + timedelta(days=report_days),
        "report_days": report_days,
        "send_id": (send_id or "").strip(),
    }


def read_send_outcomes(
    warehouse: "str | Warehouse",
    start: date | None = None,
    end: date | None = None,
    *,
    send_id: str | None = None,
    category: str | None = None,
    report_days: int = REPORT_DAYS,
):
    """What the provider reported for each logged send in [start, end] (sent dates; both
    default to the send's own dates with ``send_id``, to the whole log without): one row
    per send_id, category, provider and recipient_domain with SEND_COUNT_COLUMNS and
    first_sent_at / last_sent_at. Each recipient counts once, at its most final status
    (the watcher's forward-only rules) over the events from its send time to
    ``report_days`` days after; ``never_reported``: sent, no event at all (an event before
    the send time does not count). Reads only; pass to :func:`summarize_sends`."""
    wh = open_warehouse(warehouse)
    params = _send_params(wh, start, end, send_id, report_days)
    if not wh.table_exists("events"):
        raise WarehouseError(
            f"no events in {wh.uri or wh!r}; run `mailpulse load` first (every recipient "
            "would show as never reported)"
        )
    df = wh.query_df(SEND_OUTCOMES_SQL, params)
    if category is not None:
        df = df[df["category"] == category].reset_index(drop=True)
    return df


def read_send_recipients(
    warehouse: "str | Warehouse",
    send_id: str,
    *,
    start: date | None = None,
    end: date | None = None,
    report_days: int = REPORT_DAYS,
):
    """One row per recipient of one send (by hash: email_hash, recipient_domain,
    mailbox_provider, category, provider, sent_at, status, bounce_class,
    status_event_ts, opened, clicked); ``status`` None: sent, never reported by the
    provider. Ordered never reported first, then by status and hash."""
    from .mailbox import add_mailbox_column

    if not isinstance(send_id, str) or not send_id.strip():
        raise ValueError("send_id must be a non-empty string (the send's name in the log)")
    wh = open_warehouse(warehouse)
    params = _send_params(wh, start, end, send_id, report_days)
    if not wh.table_exists("events"):
        raise WarehouseError(f"no events in {wh.uri or wh!r}; run `mailpulse load` first")
    df = wh.query_df(SEND_RECIPIENTS_SQL, params)
    df = add_mailbox_column(df)
    order = df["status"].map(_STATUS_ORDER).fillna(-1)
    return (
        df.assign(_o=order)
        .sort_values(["_o", "email_hash"])
        .drop(columns="_o")
        .reset_index(drop=True)
    )


#: the order of recipients in read_send_recipients (never reported first: status None)
_STATUS_ORDER = {"bounce": 0, "dropped": 1, "deferred": 2, "processed": 3, "delivered": 4}


def summarize_sends(df, by: str = "send", *, now: datetime | None = None):
    """Rows of :func:`read_send_outcomes` summed per send (``by="send"``) or per send and
    mailbox provider (``"mailbox"``): the key columns, ``categories`` and ``providers``
    (sorted, comma-separated), first/last_sent_at, ``report_until`` (the last send time +
    report window), ``window_closed`` (``report_until`` is past: a recipient not reported
    by then is never reported, before it only not yet), SEND_COUNT_COLUMNS and SEND_RATES.
    Sends in first-sent order; mailbox rows most sent first, other and (unknown) last."""
    import pandas as pd

    from .mailbox import OTHER, UNKNOWN, add_mailbox_column

    if by not in SEND_BY:
        raise ValueError(f"by must be one of {', '.join(SEND_BY)}, got {by!r}")
    keys = list(SEND_BY[by])
    head = [*keys, "categories", "providers", "first_sent_at", "last_sent_at"]
    tail = ["report_until", "window_closed", *SEND_COUNT_COLUMNS, *SEND_RATES]
    if df.empty:
        return pd.DataFrame(columns=head + tail)
    if by == "mailbox":
        df = add_mailbox_column(df)
    g = df.groupby(keys, sort=True, dropna=False)

    def names(s):
        return ",".join(sorted({v for v in s if isinstance(v, str)}))

    out = g[list(SEND_COUNT_COLUMNS)].sum().astype("int64")
    out.insert(0, "categories", g["category"].agg(names))
    out.insert(1, "providers", g["provider"].agg(names))
    out.insert(2, "first_sent_at", g["first_sent_at"].min())
    out.insert(3, "last_sent_at", g["last_sent_at"].max())
    out = out.reset_index()
    # the report window of the whole send (a mailbox row closes with its send)
    until = df.groupby("send_id")["report_until"].max()
    out.insert(len(head), "report_until", out["send_id"].map(until))
    now_ts = pd.Timestamp(now or datetime.now(timezone.utc))
    out.insert(len(head) + 1, "window_closed", out["report_until"] <= now_ts)
    for rate, (num, den) in SEND_RATES.items():
        out[rate] = (out[num] / out[den]).where(out[den] != 0)
    if by == "mailbox":
        first = out["send_id"].map(out.groupby("send_id")["first_sent_at"].min())
        last = out["mailbox_provider"].isin([OTHER, UNKNOWN]).astype(int) + (
            out["mailbox_provider"] == UNKNOWN
        ).astype(int)
        out = out.assign(_f=first, _l=last).sort_values(
            ["_f", "send_id", "_l", "sent", "mailbox_provider"],
            ascending=[True, True, True, False, True],
        )
        out = out.drop(columns=["_f", "_l"])
    else:
        out = out.sort_values(["first_sent_at", "send_id"])
    return out[head + tail].reset_index(drop=True)


# -- the backends ---------------------------------------------------------------------------
_KEY = ("send_id", "email_hash", "message_id")


def _append(wh: Warehouse, rows: pa.Table) -> int:
    if wh.dialect == "duckdb":
        return _append_duckdb(wh, rows)
    if wh.dialect == "bigquery":
        return _append_bigquery(wh, rows)
    raise WarehouseError(f"the send log is not implemented for {wh.dialect!r} warehouses")


def _append_duckdb(wh, rows: pa.Table) -> int:
    import duckdb

    from .warehouse.duckdb import ddl_columns

    with wh.connect() as con:
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({ddl_columns(SEND_FIELDS)})")
        con.register("_mp_new_sends", rows)
        con.execute("BEGIN TRANSACTION")
        try:
            n = con.execute(
                f"INSERT INTO {TABLE} SELECT * FROM _mp_new_sends AS s WHERE NOT EXISTS ("
                f"SELECT 1 FROM {TABLE} AS t WHERE t.send_id = s.send_id "
                "AND t.email_hash = s.email_hash "
                "AND coalesce(t.message_id, '') = coalesce(s.message_id, ''))"
            ).fetchone()[0]
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("_mp_new_sends")
    return int(n)


def _append_bigquery(wh, rows: pa.Table) -> int:
    """Stage the rows (a load job, as the event load does), then one MERGE that inserts
    the keys not in the log yet. The count is of the keys new when the MERGE ran."""
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    wh.ensure_schema()
    table = bigquery.Table(
        f"{wh.project}.{wh.dataset}.{TABLE}",
        schema=[bigquery.SchemaField.from_api_repr(f) for f in bigquery_schema(SEND_FIELDS)],
    )
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=PARTITION
    )
    table.clustering_fields = list(CLUSTERING)
    table.description = "The send log: one row per (send, recipient, message)"
    table.labels = {"app": "mailpulse"}
    try:
        wh.client.create_table(table, exists_ok=True, retry=wh.api_retry())
    except Exception as exc:  # noqa: BLE001 - the backend's own error mapping says what to do
        raise WarehouseError(f"cannot create {TABLE} in {wh.uri}: {exc}") from exc
    stage = f"_mp_stage_sends_{uuid.uuid4().hex[:16]}"
    with tempfile.TemporaryDirectory(prefix="mailpulse-sends-") as tmp:
        path = os.path.join(tmp, "sends.parquet")
        pq.write_table(rows, path)
        try:
            wh._stage_files(stage, SEND_FIELDS, [path], SEND_SCHEMA)
            on = " AND ".join(
                f"IFNULL(T.{c}, '') = IFNULL(S.{c}, '')" if c == "message_id" else f"T.{c} = S.{c}"
                for c in _KEY
            )
            new = next(
                iter(
                    wh.query(
                        f"SELECT COUNT(*) AS n FROM `{stage}` AS S WHERE NOT EXISTS ("
                        f"SELECT 1 FROM {TABLE} AS T WHERE {on})"
                    ).to_pylist()
                )
            )["n"]
            cols = ", ".join(f.name for f in SEND_FIELDS)
            wh.query(
                f"MERGE {TABLE} AS T USING `{stage}` AS S ON {on} "
                f"WHEN NOT MATCHED THEN INSERT ({cols}) "
                f"VALUES ({', '.join('S.' + f.name for f in SEND_FIELDS)})"
            )
        finally:
            wh._drop(stage)
    return int(new)


__all__ = [
    "record_sends",
    "read_sends",
    "read_send_outcomes",
    "read_send_recipients",
    "summarize_sends",
    "send_dates",
    "REPORT_DAYS",
    "SEND_COUNT_COLUMNS",
    "SEND_RATES",
    "send_rows",
    "normalize_message_id",
    "Recorded",
    "SendsError",
    "SEND_FIELDS",
    "SEND_SCHEMA",
    "TABLE",
]
