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
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa

from .events import Field, arrow_schema, bigquery_schema
from .hashing import EmailHasher, recipient_domain, resolve_key
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
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, date):
        ts = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    elif isinstance(value, str) and value.strip():
        v = value.strip()
        try:
            return datetime.fromtimestamp(float(v), tz=timezone.utc)
        except ValueError:
            pass
        v = v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise SendsError(
                f"{what}: {value!r} is not a time; use ISO 8601 "
                "(2026-11-23T10:00:00Z) or epoch seconds"
            ) from None
    else:
        raise SendsError(f"{what}: {value!r} is not a time")
    if ts.tzinfo is None:  # a time without an offset is UTC, as everywhere in mailpulse
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


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
    "send_rows",
    "normalize_message_id",
    "Recorded",
    "SendsError",
    "SEND_FIELDS",
    "SEND_SCHEMA",
    "TABLE",
]
