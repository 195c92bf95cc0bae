"""A columnar fast path for SendGrid batches, exact by construction.

The load job sees millions of SendGrid events; normalizing them one dict at a time
costs ~10 us each. Here a chunk's event objects become Arrow columns and are
normalized with vectorised kernels. Only rows that are provably in the common,
clean shape take this path; every other row (odd types, stray whitespace, unknown or
mixed-case event names, missing ids, out-of-range times) is returned to the caller for
the exact per-record normalizer in :mod:`.sendgrid`. A property test asserts both
paths produce identical events.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..events import EVENT_SCHEMA, FIELD_NAMES
from . import base
from .base import AT_SIGN_RE2, NormalizeContext, redact_addresses, text
from .sendgrid import _MS_THRESHOLD, BOUNCE_TYPE_CLASS, EVENT_MAP, PROVIDER, message_id

#: Every character Python's str.strip() removes (RE2's \s is ASCII only).
_PY_SPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_SPACE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_SPACE) + "]"
_NEEDS_TRIM = f"^{_SPACE_CLASS}|{_SPACE_CLASS}$"
#: Ids as SendGrid writes them: no whitespace, no control characters.
_ID_RE = r"^[A-Za-z0-9+/=_\-.:@]+$"
_MIN_US = int(base._MIN_TS.timestamp()) * 1_000_000
_MAX_US = int(base._MAX_TS.timestamp()) * 1_000_000
_KNOWN = pa.array(sorted(EVENT_MAP))
_BLOCK_WORDS = pa.array(sorted(k for k, v in BOUNCE_TYPE_CLASS.items() if v == "block"))


def text_column(values: list[Any]) -> pa.Array:
    """``base.text`` applied to a column: trimmed strings, empty -> null, numbers as text."""
    try:
        arr = pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([text(v) for v in values], type=pa.string())
    if arr.null_count == len(arr):
        return arr
    needs = pc.fill_null(pc.match_substring_regex(arr, _NEEDS_TRIM), False)
    if pc.any(needs).as_py():
        fixed = [text(v) if n else v for v, n in zip(arr.to_pylist(), needs.to_pylist())]
        arr = pa.array(fixed, type=pa.string())
    return pc.if_else(pc.equal(pc.utf8_length(arr), 0), pa.scalar(None, pa.string()), arr)


def redacted(arr: pa.Array) -> pa.Array:
    """``base.redact_addresses`` on the values that may hold an address."""
    may = pc.fill_null(pc.match_substring_regex(arr, AT_SIGN_RE2, ignore_case=True), False)
    if not pc.any(may).as_py():
        return arr
    return pa.array([redact_addresses(v) if m else v
                     for v, m in zip(arr.to_pylist(), may.to_pylist())], type=pa.string())


def _per_distinct(arr: pa.Array, fn) -> pa.Array:
    """``fn`` applied once per distinct value (ids repeat across a message's events)."""
    enc = arr.dictionary_encode()
    return pc.take(pa.array([fn(v) for v in enc.dictionary.to_pylist()], pa.string()),
                   enc.indices)


def _int_column(values: list[Any]) -> tuple[pa.Array, list[int]]:
    """int64 column; positions whose value is not a plain int are left to the exact path
    (pyarrow would silently truncate a float such as 1700000000.5)."""
    bad = [i for i, v in enumerate(values) if type(v) is not int or not -2**62 < v < 2**62]
    if not bad:
        return pa.array(values, type=pa.int64()), []
    bad_set = set(bad)
    return pa.array([None if i in bad_set else v for i, v in enumerate(values)],
                    type=pa.int64()), bad


def _categories(values: list[Any]) -> tuple[list[list[str]], list[int]]:
    """Category lists for clean values; positions needing the exact path."""
    out: list[list[str]] = []
    bad: list[int] = []
    for i, c in enumerate(values):
        if c is None:
            out.append([])
        elif type(c) is str and c and not c[0].isspace() and not c[-1].isspace():
            out.append([c])
        elif (type(c) is list and all(type(x) is str and x and not x[0].isspace()
                                      and not x[-1].isspace() for x in c)
              and len(set(c)) == len(c)):
            out.append(c)
        else:
            out.append([])
            bad.append(i)
    return out, bad


def normalize_items(items: list[dict[str, Any]], ctx: NormalizeContext
                    ) -> tuple[pa.Table, list[int]]:
    """(events for the clean rows, positions of rows the exact path must handle)."""
    n = len(items)
    if n == 0:
        return EVENT_SCHEMA.empty_table(), []
    get = lambda k: [it.get(k) for it in items]  # noqa: E731

    event = pa.array([v if type(v) is str else None for v in get("event")], type=pa.string())
    email_raw = get("email")
    email = pa.array([v if type(v) is str else None for v in email_raw], type=pa.string())
    ts, bad_ts = _int_column(get("timestamp"))
    eid = pa.array([v if type(v) is str else None for v in get("sg_event_id")], type=pa.string())
    mid_raw = pa.array([v if type(v) is str else None for v in get("sg_message_id")],
                       type=pa.string())
    cats, bad_cats = _categories(get("category"))

    ok = pc.and_(pc.is_in(event, value_set=_KNOWN), pc.is_valid(email))
    ok = pc.and_(ok, pc.fill_null(pc.match_substring_regex(eid, _ID_RE), False))
    # message ids exactly as the per-record path derives them from sg_message_id alone;
    # ids that need smtp-id (no message part) take the exact path
    mid = _per_distinct(mid_raw, lambda v: message_id({"sg_message_id": v}))
    ok = pc.and_(ok, pc.fill_null(pc.match_substring_regex(mid_raw, _ID_RE), False))
    ok = pc.and_(ok, pc.is_valid(mid))
    # seconds, or milliseconds above the threshold (as the exact path reads them)
    is_ms = pc.greater_equal(pc.abs(ts), _MS_THRESHOLD)
    ts_us = pc.if_else(is_ms, pc.multiply(ts, 1000), pc.multiply(ts, 1_000_000))
    ok = pc.and_(ok, pc.fill_null(pc.and_(pc.greater_equal(ts_us, _MIN_US),
                                          pc.less(ts_us, _MAX_US)), False))
    # addresses: hash each distinct value once; blank ones go the exact way
    enc = email.dictionary_encode()
    uniq = enc.dictionary.to_pylist()
    blank = [not u.strip() for u in uniq]
    hashes = pa.array([None if b else ctx.hasher(u) for u, b in zip(uniq, blank)], pa.string())
    domains = pa.array([None if b else _domain(u) for u, b in zip(uniq, blank)], pa.string())
    email_hash = pc.take(hashes, enc.indices)
    ok = pc.and_(ok, pc.is_valid(email_hash))

    mask = ok.to_pylist()
    for i in bad_ts:
        mask[i] = False
    for i in bad_cats:
        mask[i] = False
    rejected = [i for i, m in enumerate(mask) if not m]
    keep = pa.array(mask, type=pa.bool_())
    if not any(mask):
        return EVENT_SCHEMA.empty_table(), rejected

    def kept(arr):
        return pc.filter(arr, keep)

    event_k = kept(event)
    ts_k = pc.cast(kept(ts_us), pa.timestamp("us", tz="UTC"))
    bounce = pc.equal(event_k, "bounce")
    btype = pc.utf8_lower(kept(text_column(get("type"))))
    bclass = pc.if_else(pc.fill_null(pc.is_in(btype, value_set=_BLOCK_WORDS), False),
                        "block", "hard")
    reason = redacted(pc.coalesce(kept(text_column(get("reason"))),
                                  kept(text_column(get("response")))))
    cats_k = pa.array([c for c, m in zip(cats, mask) if m], type=pa.list_(pa.string()))
    m = len(event_k)
    columns = {
        "event_id": kept(eid),
        "provider": pa.array([PROVIDER] * m, pa.string()),
        "event_type": event_k,  # exact canonical names only took this path
        "provider_event_type": event_k,
        "bounce_class": pc.if_else(bounce, bclass, pa.scalar(None, pa.string())),
        "event_ts": ts_k,
        "event_date": pc.cast(ts_k, pa.date32()),
        "message_id": kept(mid),
        "email_hash": kept(email_hash),
        "recipient_domain": kept(pc.take(domains, enc.indices)),
        "categories": cats_k,
        "reason": reason,
        "smtp_status": kept(text_column(get("status"))),
        "url": redacted(kept(text_column(get("url")))),
        "attempt": kept(text_column(get("attempt"))),
        "source_uri": pa.array([ctx.source_uri or None] * m, pa.string()),
        "ingested_at": pa.array([ctx.ingested_at] * m, pa.timestamp("us", tz="UTC")),
    }
    table = pa.table([columns[f] for f in FIELD_NAMES], schema=EVENT_SCHEMA)
    return table, rejected


def _domain(address: str) -> str | None:
    from ..hashing import recipient_domain
    return recipient_domain(address)
