"""What every provider normalizer shares: the settings it runs with and what it returns.

A normalizer is a pure function ``normalize(doc, ctx) -> Result`` (``ctx``: the
:class:`NormalizeSettings` of the file being read) from one parsed provider record (a
JSON value) to canonical events, dead letters, or a count of records that carry no event. It never raises: every record ends somewhere, and

    result.records == len(result.events) + len(result.dead_letters) + result.without_event

holds for every result (a record that fans out to several recipients counts once per
recipient it reports on, so the identity holds for SES multi-recipient records too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

import orjson

from ..events import DeadLetter
from ..hashing import EmailHasher, recipient_domain
from ..records import DEFAULT_MAX_RECORD_BYTES


@dataclass(frozen=True)
class NormalizeSettings:
    """Everything a normalizer reads, in one picklable value (Beam ships it to the workers;
    the key stays inside the hasher).

    Built once at the entry point (:class:`pipelines.settings.Settings` from the flags,
    the environment or a DAG's params) and passed down. The lineage of the file being read
    (``source_uri``, ``ingested_at``) is set per file with :meth:`for_file`, which returns
    a copy; everything else is the run's.
    """

    hasher: EmailHasher
    #: SES: which mail tag holds the categories (``--ses-category-tag``).
    ses_category_tag: str = "category"
    #: CMC: the time zone of ``created`` (the service runs in Japan time; ``--cmc-timezone``).
    cmc_timezone: str = "Asia/Tokyo"
    #: CMC: a record field whose (non-empty) value becomes the category, e.g. ``apiData``
    #: (``--cmc-category-field``).
    cmc_category_field: str | None = None
    #: A record longer than this becomes a dead letter without being read whole or parsed
    #: (``--max-record-bytes``; default: the collector's body limit).
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: Lineage of the file being read: set per file (:meth:`for_file`).
    source_uri: str = ""
    ingested_at: datetime | None = None
    #: ``cmc_timezone`` looked up once (an unknown name fails here, at the entry point).
    cmc_tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "cmc_tz", ZoneInfo(self.cmc_timezone))

    def for_file(self, source_uri: str, ingested_at: datetime | None = None) -> NormalizeSettings:
        """These settings for reading one file: its URI and the load's time as lineage."""
        return replace(self, source_uri=source_uri, ingested_at=ingested_at)


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
        text = raw_text(raw)
        total = getattr(raw, "total_bytes", None)
        if total is not None and total > len(raw):  # the first bytes of a longer record
            text = cut_text(text)
        self.dead_letters.append(
            DeadLetter(
                reason=reason,
                raw=text,
                provider=provider,
                record_index=index,
                raw_bytes=raw_size(raw, text),
            )
        )
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


Normalizer = Callable[[Any, NormalizeSettings], Result]


def raw_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", errors="backslashreplace")
    try:
        return orjson.dumps(raw).decode("utf-8")
    except TypeError:
        pass
    try:  # integers beyond 64 bits (the reader's nesting limit keeps this shallow)
        return repr(raw)
    except RecursionError:
        return f"<{type(raw).__name__} nested too deep to show>"


def raw_size(raw: Any, text: str) -> int | None:
    """A dead letter's length in bytes: the archived record's for raw bytes (a skipped
    record's preview knows the whole record's), else the UTF-8 length of its text."""
    total = getattr(raw, "total_bytes", False)
    if total is not False:
        return total
    if isinstance(raw, (bytes, bytearray)):
        return len(raw)
    return len(text.encode("utf-8", "surrogatepass"))


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


def recipient_fields(ctx: NormalizeSettings, address: Any) -> tuple[str, str | None]:
    """(email_hash, recipient_domain) for an address; RecordError when there is none."""
    if not isinstance(address, str) or not address.strip():
        raise RecordError("missing recipient address")
    return ctx.hasher(address), recipient_domain(address)


def base_event(ctx: NormalizeSettings, **fields: Any) -> dict[str, Any]:
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


#: The at-sign of an address, however the text around it was encoded: plain; fullwidth
#: and small (``＠``, ``﹫``); URL-encoded once or more (``%40``, ``%2540``); ``%u0040``;
#: escaped as in JSON, Python or JavaScript (``\u0040``, ``\x40``) in text that is not
#: JSON; HTML entities (``&#64;``, ``&#064;``, ``&#x40;``, ``&commat;``, and those
#: escaped again: ``&amp;#64;``). Every repetition in it is anchored at a literal first
#: character and bounded by a run of one repeated unit, so the scan does bounded work
#: per character (no backtracking over the text).
_AT = re.compile(
    r"""
    [@\uff20\ufe6b]
  | %(?:25)*40
  | %u0040
  | \\(?:u0040|U00000040|x40)
  | &(?:amp;)*(?:\#(?:0*64|x0*40);?|commat;)
""",
    re.IGNORECASE | re.VERBOSE,
)

#: The same forms for Arrow's (RE2) ``match_substring_regex``, case-insensitive: the
#: columnar path redacts only the values this finds.
AT_SIGN_RE2 = (
    r"[@\x{ff20}\x{fe6b}]|%(?:25)*40|%u0040|\\(?:u0040|U00000040|x40)"
    r"|&(?:amp;)*(?:#(?:0*64|x0*40)|commat;)"
)

#: What a local part is made of, generously: word characters, ``. % + -`` (the class
#: addresses were always redacted with) and ``\ & # ;``, so that encoded characters
#: inside the local part (``%2B``, ``\u002e``, ``&#46;``) are redacted with it.
#: Redacting a non-address costs little; leaking an address costs a lot.
_LOCAL_CHARS = r"[\w.%+\-\\&#;]"
#: Matched on the reversed text: the run of local-part characters that ends at an ``@``.
_LOCAL_BEFORE = re.compile(_LOCAL_CHARS + "*")

REDACTED = "[redacted]"


def redact_addresses(value: str | None) -> str | None:
    """Free text (an SMTP reason, a clicked URL, a dead letter) with every address's
    local part removed.

    Bounce texts quote the recipient (``550 5.1.1 <alex@example.com>: User unknown``) and
    tracked URLs can carry it in a query string; plain addresses must never reach the
    warehouse or an output, so ``alex@example.com`` becomes ``[redacted]@example.com``
    (the domain stays: it is already stored as ``recipient_domain``), in any of the
    encodings :data:`_AT` knows. A text cut right after the ``@`` (a truncated record)
    loses its local part too.

    Linear time: the at-signs are found in one forward scan, and the local part before
    each is matched backwards (on the reversed text) no further than the previous
    at-sign, so no character is examined more than a bounded number of times.
    """
    if not value:
        return value
    out: list[str] = []
    reverse: str | None = None
    n = len(value)
    copied = 0  # value[:copied] is in ``out``
    floor = 0  # a local part starts no earlier than the end of the previous at-sign
    for m in _AT.finditer(value):
        at, end = m.span()
        if reverse is None:
            reverse = value[::-1]
        k = _LOCAL_BEFORE.match(reverse, n - at, n - floor).end() - (n - at)
        if k:
            out.append(value[copied : at - k])
            out.append(REDACTED)
            copied = at
        floor = end
    if not out:
        return value
    out.append(value[copied:])
    return "".join(out)


#: A dead letter keeps at most this many characters of its record (the archive keeps all
#: of it: ``source_uri`` + ``line`` point at it, ``raw_bytes`` gives its length).
PREVIEW_CHARS = 2000


def redacted_preview(value: str | None, limit: int = PREVIEW_CHARS) -> str | None:
    """At most ``limit`` characters of ``value`` with addresses redacted, ending in ``…``
    when cut. A cut can fall inside an address (``alex`` of ``alex@example.com``, or inside
    ``%40``): the run of local-part characters at the cut is dropped, so no part of a
    local part survives whatever the cut separates it from."""
    if value is None or len(value) <= limit:
        return redact_addresses(value)
    return redact_addresses(cut_text(value[:limit]))


def cut_text(head: str) -> str:
    """``head``, the start of a longer text, ending in ``…``: the run of local-part
    characters at its end is dropped (the cut may have separated it from its ``@``)."""
    return head[: len(head) - _LOCAL_BEFORE.match(head[::-1]).end()] + "…"
