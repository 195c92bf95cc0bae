"""Arrow column kernels shared by the providers' fast paths (the ``*_columnar`` modules)
and the dispatcher (:mod:`pipelines.normalizers.vectorized`): trimming as ``str.strip``
does, per-distinct-value Python, redaction, recipient columns, timestamps, event ids, and
the canonical table. Each mirrors a helper of the exact path and says which."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events import EVENT_SCHEMA
from .base import AT_SIGN_RE2, NormalizeSettings, redact_addresses, text

#: Every character Python's str.strip() removes (RE2's \\s is ASCII only).
#: (a literal: computing it walks every code point, about 0.5 s per process;
#: tests/test_vectorized_ses.py checks it against str.isspace)
_PY_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_SPACE) + "]"
#: A string Python's strip() would change.
NEEDS_TRIM = f"^{_SPACE_CLASS}|{_SPACE_CLASS}$"

_STR = pa.string()
_TS = pa.timestamp("us", tz="UTC")


def needs_trim(arr: pa.Array) -> pa.Array:
    """Strings ``str.strip()`` would change; null stays null."""
    return pc.match_substring_regex(as_array(arr), NEEDS_TRIM)


def as_array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def may_hold_u00(chunk: bytes) -> bool:
    """Whether ``\\u00`` occurs in ``chunk`` (a ``\\u00XX`` escape, or text that looks like
    one): as ``b"\\\\u00" in chunk``, but by finding the backslashes, which most chunks
    have none or few of (the plain search was the slowest of the tier-1 text checks)."""
    if b"\\" not in chunk:
        return False
    buf = np.frombuffer(chunk, np.uint8)
    at = np.flatnonzero(buf[:-3] == 92)
    return bool(np.any((buf[at + 1] == 117) & (buf[at + 2] == 48) & (buf[at + 3] == 48)))


# -- columns from values -------------------------------------------------------------------


def text_column(values: Sequence[Any]) -> pa.Array:
    """``base.text`` over a column: strings that need no trimming stay as they are (the
    common case, checked by a kernel); every other value goes through ``base.text``."""
    try:
        arr = pa.array(values, type=_STR)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([text(v) for v in values], type=_STR)
    if arr.null_count == len(arr):
        return arr
    needs = pc.fill_null(needs_trim(arr), False)
    if pc.any(needs).as_py():
        arr = pc.if_else(
            needs, pa.array([text(v) if isinstance(v, str) else None for v in values], _STR), arr
        )
    return pc.if_else(pc.equal(pc.utf8_length(arr), 0), pa.scalar(None, _STR), arr)


def single_lists(arr: pa.Array) -> pa.Array:
    """``[x]`` for each non-empty string ``x`` of ``arr``, ``[]`` for null or empty ones
    (a list column without a Python object per row)."""
    arr = as_array(arr)
    one = pc.fill_null(pc.greater(pc.utf8_length(arr), 0), False).to_numpy(zero_copy_only=False)
    offsets = np.concatenate(([0], np.cumsum(one, dtype=np.int32))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.filter(arr, pa.array(one)))


def per_distinct(arr: pa.Array, fn: Callable[[Any], Any], type_: pa.DataType) -> pa.Array:
    """``fn`` applied once per distinct value of ``arr`` (nulls stay null)."""
    arr = as_array(arr)
    if len(arr) == 0:
        return pa.array([], type_)
    enc = pc.dictionary_encode(arr)
    values = pa.array([None if v is None else fn(v) for v in enc.dictionary.to_pylist()], type_)
    return pc.take(values, enc.indices)


def redact_column(arr: pa.Array) -> pa.Array:
    """``base.redact_addresses`` on the values that may hold an address."""
    arr = as_array(arr)
    may = pc.fill_null(pc.match_substring_regex(arr, AT_SIGN_RE2, ignore_case=True), False)
    if not pc.any(may).as_py():
        return arr
    return pc.if_else(may, per_distinct(arr, redact_addresses, _STR), arr)


#: Addresses whose domain Arrow kernels derive as hashing.recipient_domain does: printable
#: ASCII without ``<``/``>`` (no display name to parse) and nothing to trim.
PLAIN_ADDRESS = r"^[\x21-\x3b\x3d\x3f-\x7e]+$"


def address_hashes(addresses: pa.Array, hasher) -> pa.Array:
    """``hasher(a)`` once per distinct string address (blank or null: null). Plain
    addresses go to the hasher's vectorized ``hash_plain`` when it has one (an
    ``EmailHasher``), the rest one by one."""

    def one(a):
        return hasher(a) if a.strip() else None

    hash_plain = getattr(hasher, "hash_plain", None)
    if hash_plain is None or len(addresses) == 0:
        return per_distinct(addresses, one, _STR)
    enc = pc.dictionary_encode(addresses)
    uniq = enc.dictionary
    plain = pc.fill_null(pc.match_substring_regex(uniq, PLAIN_ADDRESS), False)
    plain = plain.to_numpy(zero_copy_only=False)
    values = uniq.to_pylist()
    if plain.all():
        values = hash_plain(values)
    else:
        fast = iter(hash_plain([a for a, p in zip(values, plain) if p]))
        values = [next(fast) if p else one(a) for a, p in zip(values, plain)]
    return pc.take(pa.array(values, _STR), enc.indices)


def recipient_columns(
    addresses: pa.Array, ctx: NormalizeSettings
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(email_hash, recipient_domain, unusable) for string addresses: the configured
    hasher once per distinct address, and ``hashing.recipient_domain`` (in kernels for
    plain ASCII addresses, in Python for the rest). Null or blank addresses are
    ``unusable`` (the exact path turns them into dead letters)."""
    from ..hashing import recipient_domain

    addresses = as_array(addresses)
    h = address_hashes(addresses, ctx.hasher)
    plain = pc.fill_null(pc.match_substring_regex(addresses, PLAIN_ADDRESS), False)
    dom = pc.struct_field(pc.extract_regex(pc.utf8_lower(addresses), r"@(?P<d>[^@]*)$"), "d")
    dom = pc.if_else(pc.equal(pc.utf8_length(dom), 0), pa.scalar(None, _STR), dom)
    if not pc.all(pc.or_(plain, pc.is_null(addresses))).as_py():
        dom = pc.if_else(plain, dom, per_distinct(addresses, recipient_domain, _STR))
    return h, dom, pc.is_null(h).to_numpy(zero_copy_only=False)


def ts_ok(us: pa.Array) -> pa.Array:
    """Microseconds since the epoch inside ``base.check_ts``'s range (nulls: false)."""
    from . import base

    lo = int(base._MIN_TS.timestamp()) * 1_000_000
    hi = int(base._MAX_TS.timestamp()) * 1_000_000
    return pc.fill_null(pc.and_(pc.greater_equal(us, lo), pc.less(us, hi)), False)


def iso_utc(ts: pa.Array, head: pa.Array | None = None) -> pa.Array:
    """``datetime.isoformat()`` of UTC timestamps (``...+00:00``; microseconds only when
    not zero), as :func:`pipelines.events.deterministic_event_id` hashes them. ``head``:
    the ``YYYY-MM-DDTHH:MM:SS`` text of each time when the caller has it (strftime is slow)."""
    ts = as_array(ts)
    secs = pc.floor_temporal(ts, unit="second")
    if head is None:
        head = pc.utf8_slice_codeunits(
            pc.strftime(secs.cast(pa.timestamp("us")), format="%Y-%m-%dT%H:%M:%S"), 0, 19
        )
    us = pc.subtract(ts.cast(pa.int64()), secs.cast(pa.int64()))
    frac = pc.utf8_lpad(us.cast(_STR), width=6, padding="0")
    body = pc.if_else(pc.equal(us, 0), head, pc.binary_join_element_wise(head, ".", frac, ""))
    return pc.binary_join_element_wise(body, "+00:00", "")


def event_ids(provider: str, parts: Iterable[pa.Array]) -> pa.Array:
    """``deterministic_event_id(provider, *parts)`` for each row (parts are the key fields
    in order, nulls meaning empty)."""
    cols = [pc.fill_null(as_array(p), "") for p in parts]
    # as bytes: the UTF-8 the digest is over, without a str object per row
    keys = pc.binary_join_element_wise(provider, *cols, "\x1f").cast(pa.binary()).to_pylist()
    sha = hashlib.sha256
    return pa.array([sha(k).hexdigest()[:32] for k in keys], _STR)


# -- the chunk ------------------------------------------------------------------------------


def finish(
    cols: dict[str, Any], n: int, ctx: NormalizeSettings, provider: str, pos: pa.Array
) -> pa.Table:
    """The canonical table from per-event columns (missing ones null), with provider,
    event_date, source_uri and ingested_at filled in and ``_pos`` appended."""
    ts = as_array(cols["event_ts"]).cast(_TS)
    fixed = {
        "provider": pa.repeat(pa.scalar(provider, _STR), n),
        "event_ts": ts,
        "event_date": ts.cast(pa.date32()),
        "source_uri": pa.repeat(pa.scalar(ctx.source_uri or None, _STR), n),
        "ingested_at": pa.repeat(pa.scalar(ctx.ingested_at, _TS), n),
    }
    out = []
    for f in EVENT_SCHEMA:
        c = fixed.get(f.name)
        if c is None:
            c = cols.get(f.name)
            c = pa.nulls(n, f.type) if c is None else as_array(c)
        out.append(c if c.type == f.type else c.cast(f.type))
    table = pa.Table.from_arrays(out, schema=EVENT_SCHEMA)
    return table.append_column("_pos", as_array(pos).cast(pa.int64()))


def text_array(arr: pa.Array) -> pa.Array:
    """``base.text`` over a string column (trimmed; empty -> null)."""
    arr = as_array(arr)
    if len(arr) == 0 or arr.null_count == len(arr):
        return arr
    needs = pc.fill_null(needs_trim(arr), False)
    if pc.any(needs).as_py():
        arr = pc.if_else(needs, per_distinct(arr, text, _STR), arr)
    return pc.if_else(pc.equal(pc.utf8_length(arr), 0), pa.scalar(None, _STR), arr)
