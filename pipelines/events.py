"""The canonical event: one definition, from which the Arrow and BigQuery schemas derive.

Every provider record becomes zero or more canonical events (DESIGN.md, "One
vocabulary"). A canonical event in Python is a plain ``dict`` keyed by
:data:`FIELD_NAMES`; ``event_ts`` is a timezone-aware UTC ``datetime`` and
``event_date`` its UTC ``date``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable

import pyarrow as pa

from .timeutil import rfc3339  # noqa: F401 (re-exported)

PROVIDERS = ("sendgrid", "ses", "cmc")

#: SendGrid's event names are the canonical vocabulary; anything else is ``unknown``.
EVENT_TYPES = (
    "processed",
    "dropped",
    "delivered",
    "deferred",
    "bounce",
    "open",
    "click",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
    "unknown",
)
BOUNCE_CLASSES = ("hard", "soft", "block", "undetermined")


@dataclass(frozen=True)
class Field:
    name: str
    bq_type: str  # BigQuery Standard SQL type
    mode: str  # REQUIRED | NULLABLE | REPEATED
    description: str


#: The one definition of the canonical event (order is the column order everywhere).
EVENT_FIELDS: tuple[Field, ...] = (
    Field(
        "event_id",
        "STRING",
        "REQUIRED",
        "Provider event id (sg_event_id); for SES/CMC a deterministic hash of "
        "provider, message, type, recipient and time",
    ),
    Field("provider", "STRING", "REQUIRED", "sendgrid | ses | cmc"),
    Field("event_type", "STRING", "REQUIRED", "Canonical (SendGrid) event name, or unknown"),
    Field("provider_event_type", "STRING", "NULLABLE", "The provider's own word, as received"),
    Field(
        "bounce_class", "STRING", "NULLABLE", "hard | soft | block | undetermined (bounces only)"
    ),
    Field("event_ts", "TIMESTAMP", "REQUIRED", "When it happened (UTC)"),
    Field("event_date", "DATE", "REQUIRED", "UTC date of event_ts; the partition column"),
    Field("message_id", "STRING", "NULLABLE", "Provider message id, normalised"),
    Field(
        "email_hash",
        "STRING",
        "NULLABLE",
        "HMAC-SHA256 hex of the trimmed, lower-cased address (MAILPULSE_HASH_KEY)",
    ),
    Field("recipient_domain", "STRING", "NULLABLE", "Recipient domain, lower-cased"),
    Field(
        "categories",
        "STRING",
        "REPEATED",
        "SendGrid categories / SES tag values / CMC configured field",
    ),
    Field("reason", "STRING", "NULLABLE", "Provider reason or SMTP response, trimmed"),
    Field("smtp_status", "STRING", "NULLABLE", "Provider status code as given, trimmed"),
    Field("url", "STRING", "NULLABLE", "Clicked URL"),
    Field("attempt", "STRING", "NULLABLE", "Delivery attempt number as the provider gives it"),
    Field("source_uri", "STRING", "NULLABLE", "Archive file the event was read from"),
    Field("ingested_at", "TIMESTAMP", "NULLABLE", "When the load that stored it started (UTC)"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in EVENT_FIELDS)

DEAD_LETTER_FIELDS: tuple[Field, ...] = (
    Field("source_uri", "STRING", "REQUIRED", "Archive file (or input path) of the record"),
    Field("line", "INT64", "REQUIRED", "1-based line where the record starts"),
    Field(
        "record_index",
        "INT64",
        "REQUIRED",
        "Position of the record within the line (items of a batch, SES recipients); 0 for a whole line",
    ),
    Field("provider", "STRING", "NULLABLE", "Provider when it could be told, else null"),
    Field("reason", "STRING", "REQUIRED", "Why the record could not become an event"),
    Field(
        "raw",
        "STRING",
        "REQUIRED",
        "A preview of the record's raw text (at most 2,000 characters, addresses "
        "redacted); source_uri + line point at the whole record in the archive",
    ),
    Field("event_date", "DATE", "NULLABLE", "The archive date the record was loaded for"),
    Field("load_id", "STRING", "NULLABLE", "The load that stored it"),
    Field("ingested_at", "TIMESTAMP", "NULLABLE", "When that load started (UTC)"),
    # Added after the first release: last, so tables created before it gain it with
    # ALTER TABLE ... ADD COLUMN and keep the column order.
    Field(
        "raw_bytes",
        "INT64",
        "NULLABLE",
        "Length of the record in the archive, in bytes (null when unknown)",
    ),
)
DEAD_LETTER_NAMES: tuple[str, ...] = tuple(f.name for f in DEAD_LETTER_FIELDS)

_ARROW_TYPES = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
}


def arrow_schema(fields: Iterable[Field] = EVENT_FIELDS) -> pa.Schema:
    """Arrow schema for a field list (REPEATED becomes ``list<...>``)."""
    out = []
    for f in fields:
        t = _ARROW_TYPES[f.bq_type]
        if f.mode == "REPEATED":
            out.append(pa.field(f.name, pa.list_(t), nullable=True))
        else:
            out.append(pa.field(f.name, t, nullable=f.mode != "REQUIRED"))
    return pa.schema(out)


def bigquery_schema(fields: Iterable[Field] = EVENT_FIELDS) -> list[dict[str, str]]:
    """BigQuery schema as JSON-able dicts (``SchemaField.from_api_repr`` accepts them)."""
    return [
        {"name": f.name, "type": f.bq_type, "mode": f.mode, "description": f.description}
        for f in fields
    ]


EVENT_SCHEMA = arrow_schema(EVENT_FIELDS)
DEAD_LETTER_SCHEMA = arrow_schema(DEAD_LETTER_FIELDS)


@dataclass
class DeadLetter:
    """A record that could not become an event, with a precise reason."""

    reason: str
    raw: str
    source_uri: str = ""
    line: int = 0
    record_index: int = 0
    provider: str | None = None
    #: The record's length in bytes as archived (``raw`` may be only a preview of it).
    raw_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_uri,
            "line": self.line,
            "record_index": self.record_index,
            "provider": self.provider,
            "reason": self.reason,
            "raw": self.raw,
            "raw_bytes": self.raw_bytes,
        }


def deterministic_event_id(
    provider: str,
    message_id: str | None,
    event_type: str,
    email_hash: str | None,
    event_ts: datetime,
    extra: str = "",
) -> str:
    """Id for providers that give none: a re-sent record gets the same id."""
    key = "\x1f".join(
        (provider, message_id or "", event_type, email_hash or "", event_ts.isoformat(), extra)
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def event_to_json(event: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready view of a canonical event (timestamps RFC 3339 UTC, dates ISO)."""
    out = {}
    for name in FIELD_NAMES:
        v = event.get(name)
        if isinstance(v, datetime):
            v = rfc3339(v)
        elif isinstance(v, date):
            v = v.isoformat()
        elif name == "categories" and v is None:
            v = []
        out[name] = v
    return out


def events_to_arrow(events: list[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table in the canonical schema from event dicts."""
    cols = {name: [e.get(name) for e in events] for name in FIELD_NAMES}
    return pa.Table.from_pydict(cols, schema=EVENT_SCHEMA)


def dead_letters_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in DEAD_LETTER_NAMES}
    return pa.Table.from_pydict(cols, schema=DEAD_LETTER_SCHEMA)


#: One row per load (counts are totals; ``per_provider`` is the same counts as JSON).
LOAD_FIELDS: tuple[Field, ...] = (
    Field("load_id", "STRING", "REQUIRED", "Unique id of the load"),
    Field("archive", "STRING", "REQUIRED", "Archive URI that was read"),
    Field("archive_date", "DATE", "REQUIRED", "The archive day that was loaded"),
    Field("started_at", "TIMESTAMP", "REQUIRED", "When the load started (UTC)"),
    Field("finished_at", "TIMESTAMP", "REQUIRED", "When it committed (UTC)"),
    Field(
        "status",
        "STRING",
        "REQUIRED",
        "succeeded, or empty (no archive file found); failed loads leave no row and no data",
    ),
    Field("runner", "STRING", "NULLABLE", "Beam runner"),
    Field("files_read", "INT64", "REQUIRED", "Archive files read"),
    Field("records_read", "INT64", "REQUIRED", "Provider records read"),
    Field("events_loaded", "INT64", "REQUIRED", "New events stored"),
    Field("duplicates_in_batch", "INT64", "REQUIRED", "Events seen more than once in this load"),
    Field("already_loaded", "INT64", "REQUIRED", "Events stored by an earlier load"),
    Field("dead_letters", "INT64", "REQUIRED", "Records that became dead letters"),
    Field("records_without_event", "INT64", "REQUIRED", "Records that carry no event"),
    Field("per_provider", "STRING", "NULLABLE", "The same counts per provider, as JSON"),
    # Added with the loaded_files manifest (nullable: older tables gain them in place).
    Field("files_skipped", "INT64", "NULLABLE", "Files found but already loaded (not read)"),
    Field("first_date", "DATE", "NULLABLE", "First archive day of the load's window"),
)
LOAD_SCHEMA = arrow_schema(LOAD_FIELDS)


#: The manifest of loaded files: one row per archive object, written in the same
#: transaction as its events. A load reads only objects not in it, or whose size or
#: generation (last-modified time) changed since.
LOADED_FILE_FIELDS: tuple[Field, ...] = (
    Field("source_uri", "STRING", "REQUIRED", "The archive object"),
    Field("provider", "STRING", "REQUIRED", "Provider of its source"),
    Field("archive_date", "DATE", "REQUIRED", "Archive day of its key (the partition)"),
    Field("size", "INT64", "REQUIRED", "Bytes when it was read"),
    Field("generation", "STRING", "NULLABLE", "Last-modified time (seconds) when it was read"),
    Field("load_id", "STRING", "REQUIRED", "The load that read it last"),
    Field("records", "INT64", "REQUIRED", "Provider records read from it"),
    Field("events", "INT64", "REQUIRED", "Events normalized from it (before de-duplication)"),
    Field("loaded_at", "TIMESTAMP", "REQUIRED", "When that load committed (UTC)"),
)
LOADED_FILE_SCHEMA = arrow_schema(LOADED_FILE_FIELDS)
