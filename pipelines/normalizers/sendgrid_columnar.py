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

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events import EVENT_SCHEMA, FIELD_NAMES
from .base import NormalizeSettings
from .columns import LETTER_ESCAPE, has_letter_escape, per_distinct, text_column, ts_ok
from .columns import redact_column as _redact_column
from .sendgrid import _MS_THRESHOLD, BOUNCE_TYPE_CLASS, EVENT_MAP, PROVIDER, message_id

#: Ids as SendGrid writes them: no whitespace, no control characters.
_ID_RE = r"^[A-Za-z0-9+/=_\-.:@]+$"
_ID_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-.:@"
_KNOWN = pa.array(sorted(EVENT_MAP))
_BLOCK_WORDS = pa.array(sorted(k for k, v in BOUNCE_TYPE_CLASS.items() if v == "block"))


def _int_column(values: list[Any]) -> tuple[pa.Array, list[int]]:
    """int64 column; positions whose value is not a plain int are left to the exact path
    (pyarrow would silently truncate a float such as 1700000000.5)."""
    bad = [i for i, v in enumerate(values) if type(v) is not int or not -(2**62) < v < 2**62]
    if not bad:
        return pa.array(values, type=pa.int64()), []
    bad_set = set(bad)
    return pa.array(
        [None if i in bad_set else v for i, v in enumerate(values)], type=pa.int64()
    ), bad


def _categories(values: list[Any]) -> tuple[list[list[str]], list[int]]:
    """Category lists for clean values; positions needing the exact path."""
    out: list[list[str]] = []
    bad: list[int] = []
    for i, c in enumerate(values):
        if c is None:
            out.append([])
        elif type(c) is str and c and not c[0].isspace() and not c[-1].isspace():
            out.append([c])
        elif (
            type(c) is list
            and all(type(x) is str and x and not x[0].isspace() and not x[-1].isspace() for x in c)
            and len(set(c)) == len(c)
        ):
            out.append(c)
        else:
            out.append([])
            bad.append(i)
    return out, bad


def normalize_items(
    items: list[dict[str, Any]], ctx: NormalizeSettings
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
    mid_raw = pa.array(
        [v if type(v) is str else None for v in get("sg_message_id")], type=pa.string()
    )
    cats, bad_cats = _categories(get("category"))

    ok = pc.and_(pc.is_in(event, value_set=_KNOWN), pc.is_valid(email))
    ok = pc.and_(ok, pc.fill_null(pc.match_substring_regex(eid, _ID_RE), False))
    # message ids exactly as the per-record path derives them from sg_message_id alone;
    # ids that need smtp-id (no message part) take the exact path
    mid = per_distinct(mid_raw, lambda v: message_id({"sg_message_id": v}), pa.string())
    ok = pc.and_(ok, pc.fill_null(pc.match_substring_regex(mid_raw, _ID_RE), False))
    ok = pc.and_(ok, pc.is_valid(mid))
    # seconds, or milliseconds above the threshold (as the exact path reads them)
    is_ms = pc.greater_equal(pc.abs(ts), _MS_THRESHOLD)
    ts_us = pc.if_else(is_ms, pc.multiply(ts, 1000), pc.multiply(ts, 1_000_000))
    ok = pc.and_(ok, ts_ok(ts_us))
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
    bclass = pc.if_else(
        pc.fill_null(pc.is_in(btype, value_set=_BLOCK_WORDS), False), "block", "hard"
    )
    reason = _redact_column(
        pc.coalesce(kept(text_column(get("reason"))), kept(text_column(get("response"))))
    )
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
        "url": _redact_column(kept(text_column(get("url")))),
        "attempt": kept(text_column(get("attempt"))),
        "source_uri": pa.array([ctx.source_uri or None] * m, pa.string()),
        "ingested_at": pa.array([ctx.ingested_at] * m, pa.timestamp("us", tz="UTC")),
    }
    table = pa.table([columns[f] for f in FIELD_NAMES], schema=EVENT_SCHEMA)
    return table, rejected


def _domain(address: str) -> str | None:
    from ..hashing import recipient_domain

    return recipient_domain(address)


# -- tier 1: a chunk of POST bodies read by Arrow's JSON reader (vectorized._arrow_tier) --
#
# A line is a JSON array of event objects; Arrow's reader takes one object per line, so
# each line is read as ``{"a": <line>}``. ``category`` is a string or an array, which one
# Arrow column cannot hold: ``"category":[`` is renamed ``category_l``, and the strings
# stay under ``category`` when every ``"category`` in the chunk is one of the two
# (checked by counting). Otherwise the strings are renamed ``category_s``, any other
# spelling of the key (spacing, escapes) ``category_x`` (not read), and the lines that
# have one are left to the record path.

ARROW_OPENER = b"["
#: sendgrid._FILTER_SUFFIX as a prefix extractor: the part before the first match
_MESSAGE_PART = r"^(?P<m>.*?)\.(?i:st)?(?i:filter)"


def arrow_sniff(chunk: bytes) -> bool:
    return True


def _message_part(mid_raw: pa.Array) -> pa.Array:
    """``_MESSAGE_PART``'s ``m`` of each id (null where it does not match). The common
    shape by plain searches: when an id's first ``.`` starts ``.filter``, the part is
    what precedes it; the regex runs only when some id is in another shape."""
    dot = pc.find_substring(mid_raw, ".")
    simple = pc.fill_null(
        pc.and_(pc.equal(dot, pc.find_substring(mid_raw, ".filter")), pc.greater_equal(dot, 0)),
        False,
    )
    if pc.all(pc.or_(simple, pc.is_null(mid_raw))).as_py():
        return pc.list_element(pc.split_pattern(mid_raw, ".", max_splits=1), 0)
    return pc.struct_field(pc.extract_regex(mid_raw, _MESSAGE_PART), "m")


def arrow_input(chunk: bytes, lines) -> tuple[bytes, np.ndarray]:
    """(the text Arrow reads, the lines it may take) for a chunk of POST bodies."""
    data = chunk.replace(b'"category":[', b'"category_l":[')
    n_lists = (len(data) - len(chunk)) // 2  # the new key is 2 bytes longer
    if chunk.count(b'"category') == chunk.count(b'"category":"') + n_lists:
        # every '"category' is the key, with a string or an array (the common case)
        allowed = None if has_letter_escape(chunk) else np.ones(len(lines), dtype=bool)
    else:
        data = data.replace(b'"category":"', b'"category_s":"')
        data = data.replace(b'"category"', b'"category_x"')
        allowed = None
    if allowed is None:
        allowed = arrow_allowed(lines.array())
    return b'{"a":' + data.replace(b"\n", b'}\n{"a":')[:-5], allowed


def arrow_schema(ctx: NormalizeSettings) -> pa.Schema:
    s = pa.string()
    item = pa.struct(
        [
            ("event", s),
            ("email", s),
            ("timestamp", pa.int64()),
            ("sg_event_id", s),
            ("sg_message_id", s),
            ("category", s),
            ("category_s", s),
            ("category_l", pa.list_(s)),
            ("reason", s),
            ("response", s),
            ("status", s),
            ("url", s),
            ("attempt", s),
            ("type", s),
        ]
    )
    return pa.schema([("a", pa.list_(item))])


def arrow_allowed(lines: pa.Array) -> np.ndarray:
    """Lines whose ``category`` keys are all ``"category":"`` or ``"category":[`` (and
    that hold no key of the renamed spellings already, nor a letter written as an
    escape)."""
    renamed = pc.add(
        pc.count_substring(lines, '"category":"'), pc.count_substring(lines, '"category":[')
    )
    ok = pc.and_(
        pc.equal(renamed, pc.count_substring(lines, '"category"')),
        pc.invert(pc.match_substring_regex(lines, LETTER_ESCAPE)),
    )
    ok = pc.and_(ok, pc.invert(pc.match_substring(lines, '"category_')))
    return ok.to_numpy(zero_copy_only=False)


def normalize_table(
    t: pa.Table, ctx: NormalizeSettings, allowed: np.ndarray
) -> tuple[pa.Table | None, np.ndarray]:
    """(events with ``_row``, the lines taken) for a chunk read with :func:`arrow_schema`."""
    import re

    from . import sendgrid
    from .columns import (
        as_array,
        finish,
        needs_trim,
        only_chars,
        per_distinct,
        recipient_columns,
        redact_column,
        single_lists,
        text_array,
        unclean_lists,
    )

    s = pa.string()
    # the mapping's own dicts, read now: names the exact path maps to themselves
    known = pa.array(
        sorted(
            k
            for k in sendgrid.EVENT_MAP
            if k == re.sub(r"[\s-]+", "_", k.strip().lower())
            and k not in sendgrid.EVENT_ALIASES
            and k not in sendgrid.NO_RECIPIENT_EVENTS
        ),
        s,
    )
    lists = as_array(t["a"])
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    ok_line = allowed & (lengths > 0)
    items = pc.list_flatten(lists)
    row = pc.list_parent_indices(lists).to_numpy()
    f = {
        name: pc.struct_field(items, name)
        for name in (
            "event",
            "email",
            "timestamp",
            "sg_event_id",
            "sg_message_id",
            "category",
            "category_s",
            "category_l",
            "reason",
            "response",
            "status",
            "url",
            "attempt",
            "type",
        )
    }
    event, ts, eid, mid_raw = f["event"], f["timestamp"], f["sg_event_id"], f["sg_message_id"]
    ok = pc.and_(pc.is_valid(items), pc.fill_null(pc.is_in(event, value_set=known), False))
    ok = pc.and_(ok, pc.fill_null(only_chars(eid, _ID_RE, _ID_CHARS), False))
    ok = pc.and_(ok, pc.fill_null(only_chars(mid_raw, _ID_RE, _ID_CHARS), False))
    # sendgrid.message_id on ids that passed _ID_RE (no space to trim): the part before
    # the first ".filter" / ".stfilter" (any case), or the whole id
    mid = pc.coalesce(_message_part(mid_raw), mid_raw)
    mid = pc.if_else(pc.equal(pc.utf8_length(mid), 0), pa.scalar(None, s), mid)
    # ids that need smtp-id (no message part) are the exact path's
    ok = pc.and_(ok, pc.is_valid(mid))
    ok = pc.and_(
        ok, pc.invert(pc.fill_null(pc.match_substring_regex(mid_raw, r"(?i)^(?:st)?filter"), True))
    )
    is_ms = pc.greater_equal(pc.abs(ts), _MS_THRESHOLD)
    ts_us = pc.if_else(is_ms, pc.multiply(ts, 1000), pc.multiply(ts, 1_000_000))
    ok = pc.and_(ok, ts_ok(ts_us))
    # categories: a clean string, or a list of distinct clean strings, or none
    # strings under "category", or "category_s" when they were renamed (never both)
    cs, cl = pc.coalesce(f["category"], f["category_s"]), f["category_l"]
    cs_ok = pc.or_kleene(
        pc.is_null(cs),
        pc.and_(pc.invert(pc.fill_null(needs_trim(cs), True)), pc.greater(pc.utf8_length(cs), 0)),
    )
    ok = pc.and_(ok, pc.fill_null(cs_ok, False))
    ok = pc.and_(ok, pc.or_(pc.is_null(cs), pc.is_null(cl)))
    ok_np = ok.to_numpy(zero_copy_only=False)
    ok_np[unclean_lists(cl)] = False
    text_ok = [
        pc.invert(pc.fill_null(needs_trim(f[k]), False))
        for k in ("reason", "response", "status", "url", "attempt")
    ]
    for c in text_ok:
        ok_np &= c.to_numpy(zero_copy_only=False)
    # bounce type: ASCII (str.lower and utf8_lower agree) and clean
    bounce = pc.fill_null(pc.equal(event, "bounce"), False)
    type_ok = pc.or_(
        pc.invert(bounce),
        pc.fill_null(pc.match_substring_regex(f["type"], r"^[\x21-\x7e]*$"), True),
    )
    ok_np &= type_ok.to_numpy(zero_copy_only=False)
    h, dom, unusable = recipient_columns(f["email"], ctx)
    ok_np &= ~unusable
    # a line is one unit: all of its items clean, or it takes the record path
    bad_lines = np.unique(row[~ok_np])
    ok_line[bad_lines] = False
    keep = ok_line[row]
    if not keep.any():
        return None, np.zeros(0, dtype=np.int64)
    keep_a = pa.array(keep)

    def kept(a):
        return pc.filter(as_array(a), keep_a)

    event_k = kept(event)
    ts_k = kept(ts_us).cast(pa.timestamp("us", tz="UTC"))
    btype = pc.utf8_lower(text_array(kept(f["type"])))
    bclass = per_distinct(
        pc.fill_null(btype, ""),
        lambda b: sendgrid.BOUNCE_TYPE_CLASS.get(b, "hard") if b else "hard",
        s,
    )
    cs_k, cl_k = kept(cs), kept(cl)
    # a clean category string (non-empty, checked above) as a list of one
    cats = pc.if_else(
        pc.is_valid(cs_k), single_lists(cs_k), pc.fill_null(cl_k, pa.scalar([], pa.list_(s)))
    )
    reason = redact_column(
        pc.coalesce(text_array(kept(f["reason"])), text_array(kept(f["response"])))
    )
    rows_k = row[keep]
    cols = {
        "event_id": kept(eid),
        "event_type": per_distinct(event_k, sendgrid.EVENT_MAP.get, s),
        "provider_event_type": event_k,
        "bounce_class": pc.if_else(
            pc.fill_null(pc.equal(event_k, "bounce"), False), bclass, pa.scalar(None, s)
        ),
        "event_ts": ts_k,
        "message_id": kept(mid),
        "email_hash": kept(h),
        "recipient_domain": kept(dom),
        "categories": cats,
        "reason": reason,
        "smtp_status": text_array(kept(f["status"])),
        "url": redact_column(text_array(kept(f["url"]))),
        "attempt": text_array(kept(f["attempt"])),
    }
    table = finish(cols, int(keep.sum()), ctx, PROVIDER, pa.array(rows_k))
    table = table.rename_columns([c if c != "_pos" else "_row" for c in table.column_names])
    return table, np.unique(rows_k)
