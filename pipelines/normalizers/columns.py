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

#: Every character Python's str.strip() removes (Arrow's whitespace trim is ASCII only).
#: (a literal: computing it walks every code point, about 0.5 s per process;
#: tests/test_vectorized_ses.py checks it against str.isspace)
_PY_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

_STR = pa.string()
_TS = pa.timestamp("us", tz="UTC")


def needs_trim(arr: pa.Array) -> pa.Array:
    """Strings ``str.strip()`` would change; null stays null.
    By trimming Python's whitespace set off both ends and comparing lengths: no regex
    that reads every string to its end."""
    arr = as_array(arr)
    trimmed = pc.utf8_trim(arr, characters=_PY_SPACE)
    return pc.not_equal(pc.binary_length(trimmed), pc.binary_length(arr))


def as_array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


#: ``\\u00XX`` escapes of the letters and ``_`` (what a key may be spelled with to dodge a
#: text check): the hex digits XX, as ``LETTER_ESCAPE`` lists them.
LETTER_ESCAPE = r"\\u00(?:4[1-9a-fA-F]|5[0-9aAfF]|6[1-9a-fA-F]|7[0-9aA])"
_ESCAPED = np.zeros((256, 256), dtype=bool)
for _hi, _los in (
    ("4", "123456789abcdefABCDEF"),
    ("5", "0123456789aAfF"),
    ("6", "123456789abcdefABCDEF"),
    ("7", "0123456789aA"),
):
    for _lo in _los:
        _ESCAPED[ord(_hi), ord(_lo)] = True


def has_letter_escape(chunk: bytes) -> bool:
    """Whether ``LETTER_ESCAPE`` occurs in ``chunk``, by finding the backslashes (most
    chunks have none or few) instead of running the pattern over the text."""
    if b"\\" not in chunk:
        return False
    buf = np.frombuffer(chunk, np.uint8)
    at = np.flatnonzero(buf[:-5] == 92)
    at = at[(buf[at + 1] == 117) & (buf[at + 2] == 48) & (buf[at + 3] == 48)]
    return bool(_ESCAPED[buf[at + 4], buf[at + 5]].any())


def only_chars(arr: pa.Array, pattern: str, chars: bytes) -> pa.Array:
    """``match_substring_regex(arr, pattern)`` for a ``pattern`` of the form
    ``^[class]+$`` whose class is exactly the ASCII ``chars``: when no byte of the
    column's data is outside ``chars`` (the common case, one ``bytes.translate``), every
    non-empty value matches; otherwise the pattern itself decides."""
    arr = as_array(arr)
    data = arr.buffers()[2] if len(arr) and arr.type == _STR else None
    if data is None or bytes(memoryview(data)).translate(None, chars):
        return pc.match_substring_regex(arr, pattern)
    return pc.greater(pc.utf8_length(arr), 0)


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


def unclean_lists(lists: pa.Array) -> np.ndarray:
    """Indices of the lists (of strings) that hold a value that is null, empty or needs
    trimming, or the same value twice: the lists a provider's exact path cleans."""
    flat = pc.list_flatten(lists)
    if not len(flat):
        return np.zeros(0, dtype=np.int64)
    parent = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    bad = pc.or_(
        pc.fill_null(needs_trim(flat), True),
        pc.equal(pc.utf8_length(pc.fill_null(flat, "")), 0),
    ).to_numpy(zero_copy_only=False)
    # a repeat: the same (list, value) pair twice, as integer keys sorted
    enc = pc.dictionary_encode(flat)
    width = len(enc.dictionary) + 1
    codes = pc.fill_null(enc.indices, width - 1).to_numpy().astype(np.int64)
    keys = np.sort(parent * width + codes)
    repeated = keys[1:][keys[1:] == keys[:-1]] // width
    return np.union1d(parent[bad], repeated)


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
    addresses = as_array(addresses)
    if len(addresses) == 0:
        return pa.array([], _STR)
    enc = pc.dictionary_encode(addresses)
    return pc.take(_distinct_hashes(enc.dictionary, hasher, _plain(enc.dictionary)), enc.indices)


#: The characters of PLAIN_ADDRESS's class.
_PLAIN_CHARS = bytes(c for c in range(0x21, 0x7F) if c not in b"<>")


def _plain(uniq: pa.Array) -> np.ndarray:
    plain = only_chars(uniq, PLAIN_ADDRESS, _PLAIN_CHARS)
    return pc.fill_null(plain, False).to_numpy(zero_copy_only=False)


def _distinct_hashes(uniq: pa.Array, hasher, plain: np.ndarray) -> pa.Array:
    """The hash of each of the distinct addresses ``uniq`` (``plain``: which are)."""

    def one(a):
        return hasher(a) if a.strip() else None

    values = uniq.to_pylist()
    hash_plain = getattr(hasher, "hash_plain", None)
    if hash_plain is None:
        return pa.array([None if a is None else one(a) for a in values], _STR)
    if plain.all():
        return pa.array(hash_plain(values), _STR)
    fast = iter(hash_plain([a for a, p in zip(values, plain) if p]))
    return pa.array([next(fast) if p else one(a) for a, p in zip(values, plain)], _STR)


def recipient_columns(
    addresses: pa.Array, ctx: NormalizeSettings
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(email_hash, recipient_domain, unusable) for string addresses: the configured
    hasher once per distinct address, and ``hashing.recipient_domain`` (in kernels for
    plain ASCII addresses, in Python for the rest), both over the distinct addresses.
    Null or blank addresses are ``unusable`` (the exact path turns them into dead
    letters)."""
    from ..hashing import recipient_domain

    addresses = as_array(addresses)
    if len(addresses) == 0:
        empty = pa.array([], _STR)
        return empty, empty, np.zeros(0, dtype=bool)
    enc = pc.dictionary_encode(addresses)
    uniq = enc.dictionary
    plain = _plain(uniq)
    h = _distinct_hashes(uniq, ctx.hasher, plain)
    dom = pc.struct_field(pc.extract_regex(pc.utf8_lower(uniq), r"@(?P<d>[^@]*)$"), "d")
    dom = pc.if_else(pc.equal(pc.utf8_length(dom), 0), pa.scalar(None, _STR), dom)
    if not plain.all():
        others = pa.array(
            [None if p else recipient_domain(a) for a, p in zip(uniq.to_pylist(), plain)], _STR
        )
        dom = pc.if_else(pa.array(plain), dom, others)
    h, dom = pc.take(h, enc.indices), pc.take(dom, enc.indices)
    return h, dom, pc.is_null(h).to_numpy(zero_copy_only=False)


def ts_ok(us: pa.Array) -> pa.Array:
    """Microseconds since the epoch inside ``base.check_ts``'s range (nulls: false)."""
    from . import base

    lo = int(base._MIN_TS.timestamp()) * 1_000_000
    hi = int(base._MAX_TS.timestamp()) * 1_000_000
    return pc.fill_null(pc.and_(pc.greater_equal(us, lo), pc.less(us, hi)), False)


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
