"""What every provider normalizer shares: the context it runs in and what it returns.

A normalizer is a pure function ``normalize(doc, ctx) -> Result`` from one parsed
provider record (a JSON value) to canonical events, dead letters, or a count of
records that carry no event. It never raises: every record ends somewhere, and

    result.records == len(result.events) + len(result.dead_letters) + result.without_event

holds for every result (a record that fans out to several recipients counts once per
recipient it reports on, so the identity holds for SES multi-recipient records too).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

import orjson

from ..events import DeadLetter
from ..hashing import EmailHasher, recipient_domain


@dataclass
class NormalizeContext:
    """Configuration a normalizer needs; built once at the entry point."""

    hasher: EmailHasher
    source_uri: str = ""
    ingested_at: datetime | None = None
    #: SES: which mail tag holds the categories.
    ses_category_tag: str = "category"
    #: CMC: the time zone of ``created`` (the service runs in Japan time).
    cmc_timezone: str = "Asia/Tokyo"
    #: CMC: a record field whose (non-empty) value becomes the category, e.g. ``apiData``.
    cmc_category_field: str | None = None

    def __post_init__(self):
        self._cmc_tz = ZoneInfo(self.cmc_timezone)

    @property
    def cmc_tz(self):
        return self._cmc_tz


@dataclass
class Result:
    events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    records: int = 0
    without_event: int = 0

    def extend(self, other: "Result") -> None:
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)
        self.records += other.records
        self.without_event += other.without_event

    def dead(self, reason: str, raw: Any, provider: str | None, index: int = 0) -> "Result":
        self.records += 1
        self.dead_letters.append(
            DeadLetter(reason=reason, raw=raw_text(raw), provider=provider, record_index=index))
        return self

    def skip(self) -> "Result":
        """A record that carries no event (counted, not dead-lettered)."""
        self.records += 1
        self.without_event += 1
        return self

    def add(self, event: dict[str, Any]) -> "Result":
        self.records += 1
        self.events.append(event)
        return self


class RecordError(ValueError):
    """Raised inside a normalizer for one record; turned into a dead letter by its caller."""


Normalizer = Callable[[Any, NormalizeContext], Result]


def raw_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", errors="backslashreplace")
    try:
        return orjson.dumps(raw).decode("utf-8")
    except TypeError:
        return repr(raw)


def text(value: Any) -> str | None:
    """Trimmed string, or None for missing/empty (numbers are kept as their text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        v = value.strip()
        return v or None
    return raw_text(value)


def recipient_fields(ctx: NormalizeContext, address: Any) -> tuple[str, str | None]:
    """(email_hash, recipient_domain) for an address; RecordError when there is none."""
    if not isinstance(address, str) or not address.strip():
        raise RecordError("missing recipient address")
    return ctx.hasher(address), recipient_domain(address)


def base_event(ctx: NormalizeContext, **fields: Any) -> dict[str, Any]:
    ts: datetime = fields["event_ts"]
    ev = {
        "event_id": None,
        "provider": None,
        "event_type": "unknown",
        "provider_event_type": None,
        "bounce_class": None,
        "event_ts": ts,
        "event_date": ts.date(),
        "message_id": None,
        "email_hash": None,
        "recipient_domain": None,
        "categories": [],
        "reason": None,
        "smtp_status": None,
        "url": None,
        "attempt": None,
        "source_uri": ctx.source_uri or None,
        "ingested_at": ctx.ingested_at,
    }
    ev.update(fields)
    return ev


def categories_from(value: Any) -> list[str]:
    """A string or a list of strings (anything else ignored), trimmed, order kept, unique."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, (str, int, float)) and not isinstance(item, bool):
            s = str(item).strip()
            if s and s not in out:
                out.append(s)
    return out


def as_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


#: Accepted event times: from the Unix epoch (SendGrid's own documentation shows a
#: ``"timestamp": "123456789"``, 1973) to the end of BigQuery's partitionable range
#: (DATE partitions exist for 1960-01-01 .. 2159-12-31; later rows would land in
#: ``__UNPARTITIONED__``, out of reach of per-partition recomputes).
_MIN_TS = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_TS = datetime(2160, 1, 1, tzinfo=timezone.utc)


def check_ts(ts: datetime) -> datetime:
    if not (_MIN_TS <= ts < _MAX_TS):
        raise RecordError(f"timestamp out of range: {ts.isoformat()}")
    return ts


def parse_iso_ts(value: Any) -> datetime:
    """ISO 8601 (``2017-08-05T00:41:02.669Z``) to UTC; RecordError when unreadable."""
    if not isinstance(value, str) or not value.strip():
        raise RecordError("missing timestamp")
    v = value.strip()
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(v)
    except ValueError as exc:
        raise RecordError(f"unreadable timestamp {value!r}") from exc
    try:
        return check_ts(as_utc(ts))
    except OverflowError:  # e.g. 0001-01-01T00:00:00+09:00 has no UTC equivalent
        raise RecordError(f"timestamp out of range: {value!r}") from None


#: Something that looks like an address, plain or URL-encoded (``%40``). Deliberately
#: generous: redacting a non-address costs little, leaking an address costs a lot.
_ADDRESS = re.compile(r"[\w.%+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)*", re.IGNORECASE)


def redact_addresses(value: str | None) -> str | None:
    """Free text (an SMTP reason, a clicked URL) with every address's local part removed.

    Bounce texts quote the recipient (``550 5.1.1 <alex@example.com>: User unknown``) and
    tracked URLs can carry it in a query string; plain addresses must never reach the
    warehouse or an output, so ``alex@example.com`` becomes ``[redacted]@example.com``
    (the domain stays: it is already stored as ``recipient_domain``).
    """
    if not value or ("@" not in value and "%40" not in value.lower()):
        return value
    return _ADDRESS.sub(_redact_one, value)


def _redact_one(m: "re.Match[str]") -> str:
    s = m.group(0)
    at = s.find("@")
    sep = "@"
    if at < 0:
        at = s.lower().find("%40")
        sep = s[at:at + 3]
    return "[redacted]" + sep + s[at + len(sep):]
