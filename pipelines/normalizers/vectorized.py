"""Vectorized normalization of a chunk's clean records, exact by construction.

The per-record path (orjson -> dicts -> the provider normalizers -> Arrow) costs 10-30 us
per event, most of it Python logic per record. Here a chunk goes through two tiers, and
whatever neither takes goes to the exact path, unchanged:

1. Arrow's C++ JSON reader parses the whole chunk straight into typed columns (SendGrid
   POST bodies, SES event-publishing records; see :func:`_arrow_tier` for when it is
   provably read as orjson reads it), and the provider's fast module normalizes the
   columns with Arrow compute kernels. No Python object per record.
2. For the records tier 1 could not take (or chunks it cannot read), the records parsed
   by :func:`pipelines.records.iter_records` (the exact path's own parser) are split by
   provider; SES (incl. SNS/SQS envelopes) and CMC ``deliveries`` in their clean shape
   are pulled into columns with plain dict look-ups and normalized with the same kernels.

In both tiers Python work is left only per *distinct* value (address hashes with the
configured hasher, CMC local times, SES tag lists) and for the event-id digests. The
provider modules (:mod:`.sendgrid_columnar`, :mod:`.ses_columnar`, :mod:`.cmc_columnar`)
read their provider module's mapping dicts each time they run and call its helpers;
none keeps a copy.

A record takes a fast tier only when it is *provably* in its provider's clean, common
shape (each module says which); every other record is returned, in order, as
``iter_records`` would have yielded it. A record is the unit: all of its events come
from one path. The property tests in ``tests/test_vectorized_*.py`` compare the paths
record for record, events, dead letters and counts.

Why not DuckDB SQL per chunk: measured here, DuckDB's JSON parse (``json_transform``
into typed structs, 4-6 us per SES line) was slower than orjson (3 us), planning the
query cost about 25 ms per chunk, and the shape checks it needs (duplicate keys, which
DuckDB resolves to the first and orjson to the last) cost 20 us more per line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events import EVENT_SCHEMA
from ..records import RawRecord
from .base import NormalizeSettings
from .columns import (  # noqa: F401
    _STR,
    _TS,
    as_array,
    event_ids,
    finish,
    needs_trim,
    per_distinct,
    recipient_columns,
    redact_column,
    text_array,
    text_column,
    ts_ok,
)

log = logging.getLogger(__name__)

#: Seconds this process spent parsing JSON inside :func:`normalize_chunk` (Arrow's reader,
#: orjson via iter_records / parse_json): the benchmark's "parse" step.
PARSE_SECONDS = [0.0]

#: Below this many candidate records a provider's records take the exact path (the
#: fixed cost of the kernels is about a hundred microseconds).
MIN_RECORDS = 16


@dataclass
class FastResult:
    """Events of the records the fast path took (canonical schema, record order), events
    per provider, and the records left for the exact path (in their original order)."""

    events: pa.Table
    counts: dict[str, int]
    residual: list[RawRecord]
    records_fast: int = 0


def _modules():
    """The fast modules: tier 1 uses those with ``arrow_schema``, the record path those
    with ``select``."""
    from . import cmc_columnar, sendgrid_columnar, ses_columnar

    return (sendgrid_columnar, ses_columnar, cmc_columnar)


def normalize_chunk(
    chunk: bytes,
    ctx: NormalizeSettings,
    *,
    min_records: int = MIN_RECORDS,
    modules=None,
    with_lines: bool = False,
    arrow: bool = True,
) -> FastResult:
    """The load job's entry point: a chunk's bytes -> fast-path events + the records
    (as ``iter_records`` yields them) left for the exact path. Tier 1 (Arrow's JSON
    reader) when the chunk allows it, then the record path for what it leaves."""
    from ..records import iter_records

    mods = modules if modules is not None else _modules()
    t1 = None
    if arrow:
        t1 = normalize_chunk_arrow(
            chunk,
            ctx,
            with_lines=True,
            min_lines=min_records,
            modules=[m for m in mods if hasattr(m, "arrow_schema")],
        )
    if t1 is not None:
        records = t1.residual
    else:
        t0 = time.perf_counter()
        records = list(iter_records(chunk))
        PARSE_SECONDS[0] += time.perf_counter() - t0
    t2 = normalize_records(records, ctx, min_records=min_records, modules=mods, with_lines=True)
    if t1 is None or not t1.events.num_rows:
        res = t2
    else:
        events = pa.concat_tables([t1.events, t2.events]) if t2.events.num_rows else t1.events
        if t2.events.num_rows:
            events = events.take(pc.sort_indices(events["_line"]))  # stable: record order
        counts = dict(t1.counts)
        for k, v in t2.counts.items():
            counts[k] = counts.get(k, 0) + v
        res = FastResult(events, counts, t2.residual, t1.records_fast + t2.records_fast)
    if not with_lines:
        res.events = res.events.drop_columns(["_line"])
    return res


def normalize_records(
    records: list[RawRecord],
    ctx: NormalizeSettings,
    *,
    min_records: int = MIN_RECORDS,
    modules=None,
    with_lines: bool = False,
) -> FastResult:
    """Split ``records`` (as ``iter_records`` yields them) into fast-path events and the
    records the exact path must handle. ``with_lines`` keeps a ``_line`` column (the
    record's line) for tests that compare record by record."""
    taken = np.zeros(len(records), dtype=bool)
    tables: list[pa.Table] = []
    counts: dict[str, int] = {}
    for module in modules if modules is not None else _modules():
        if not hasattr(module, "select"):
            continue
        pos, docs = module.select(records, taken)
        if not pos or len(pos) < min_records:
            continue
        try:
            table, ok = module.normalize_docs(docs, ctx)
        except Exception as exc:  # noqa: BLE001 - a fast-path bug must not lose records:
            # they all take the exact path instead (the error's type only: its text may
            # quote a value, i.e. an address)
            log.warning(
                "vectorized %s path failed (%s); records take the exact path",
                module.PROVIDER,
                type(exc).__name__,
            )
            continue
        if table is None or not len(ok):
            continue
        pos = np.asarray(pos, dtype=np.int64)
        taken[pos[ok]] = True
        # ``_pos`` (index into docs) -> index into records, for the record order
        table = table.set_column(
            table.schema.get_field_index("_pos"), "_pos", pa.array(pos[table["_pos"].to_numpy()])
        )
        tables.append(table)
        counts[module.PROVIDER] = counts.get(module.PROVIDER, 0) + table.num_rows
    if not tables:
        events = EVENT_SCHEMA.empty_table()
        if with_lines:
            events = events.append_column("_line", pa.array([], pa.int64()))
        return FastResult(events, {}, records)
    events = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1:
        events = events.take(pc.sort_indices(events["_pos"]))
    if with_lines:
        lines = np.asarray([r.line for r in records], dtype=np.int64)
        events = events.append_column("_line", pa.array(lines[events["_pos"].to_numpy()]))
    events = events.drop_columns(["_pos"])
    residual = [r for r, t in zip(records, taken) if not t]
    return FastResult(events, counts, residual, records_fast=int(taken.sum()))


# -- tier 1: Arrow's JSON reader over the whole chunk ---------------------------------------
#
# For a chunk in the common shape, Arrow's C++ JSON reader (RapidJSON) parses every line
# straight into typed columns (about half orjson's cost, and no Python object per record).
# It is used only when it provably reads the chunk as orjson would: the chunk is UTF-8,
# has no blank line, one object per line (the row count must equal the line count), and
# every field the mapping reads has the declared type (a mismatch fails the whole chunk,
# which then takes the record path). Lines with text RapidJSON accepts and orjson refuses
# (``NaN``, ``Infinity``, ``Inf``: also inside strings, harmlessly) are never taken.
# Repeated keys: RapidJSON fails the chunk on a repeated key it reads; repeated keys it
# does not read are read by neither path.

_RAPIDJSON_ONLY = r"[:,\[][ \t\r\n]*-?(?:NaN|Inf)"


_TOKEN_BEFORE = frozenset(b":,[")
_JSON_SPACE = frozenset(b" \t\r")  # and \n, which ends the line


def _rapidjson_only_lines(chunk: bytes, lines: Lines) -> np.ndarray:
    """Indices of the lines where ``_RAPIDJSON_ONLY`` matches: a ``NaN`` / ``Inf`` (or
    ``-NaN`` / ``-Inf``) right after ``:``, ``,`` or ``[`` and JSON whitespace. Found by
    scanning for the two words (rare in a chunk: a few random ids contain them) instead
    of running the pattern over every line."""
    buf = np.frombuffer(chunk, np.uint8)
    found = []
    for word in (b"NaN", b"Inf"):
        # the word's first letter by a vector compare (faster than bytes.find here)
        at = np.flatnonzero(buf[:-2] == word[0])
        for i in at[(buf[at + 1] == word[1]) & (buf[at + 2] == word[2])].tolist():
            j = i - 1
            if j >= 0 and chunk[j] == 45:  # "-"
                j -= 1
            while j >= 0 and chunk[j] in _JSON_SPACE:
                j -= 1
            if j >= 0 and chunk[j] in _TOKEN_BEFORE:
                found.append(i)
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.searchsorted(lines.ends, np.asarray(found, dtype=np.int64)))


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 as Python's decoder reads it (no surrogates, no overlong
    forms), checked by Arrow's validator without making a str of it."""
    if data.isascii():
        return True
    try:
        pa.array([data], pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        return False
    return True


def _maybe_too_deep(chunk: bytes, lines: Lines) -> np.ndarray:
    """Indices of the lines with more than ``records.MAX_JSON_DEPTH`` brackets: only
    those can nest deeper than the exact path reads (it makes them dead letters; Arrow's
    reader would read them), so they are left to it, as ``parse_json`` decides."""
    from ..records import MAX_JSON_DEPTH

    buf = np.frombuffer(chunk, np.uint8)
    openers = (buf == 91) | (buf == 123)  # "[" and "{"
    per_line = np.add.reduceat(openers, lines.starts, dtype=np.int32)
    return np.flatnonzero(per_line > MAX_JSON_DEPTH)


@dataclass
class Lines:
    """A chunk's lines (no copy): ``starts[i]`` .. ``ends[i]`` (newline excluded)."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def raw(self, i: int) -> bytes:
        return self.data[int(self.starts[i]) : int(self.ends[i])]

    def array(self) -> pa.Array:
        """The lines as one Arrow string column, each value keeping its newline."""
        offsets = np.concatenate((self.starts, [len(self.data)])).astype(np.int64)
        return pa.Array.from_buffers(
            pa.large_string(),
            len(self.starts),
            [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(self.data)],
        )


def split_lines(data: bytes) -> Lines | None:
    """The lines of a chunk ending in a newline, or None."""
    if not data.endswith(b"\n"):
        return None
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    return Lines(data, starts, ends.astype(np.int64))


def _arrow_tier(
    chunk: bytes, ctx: NormalizeSettings, module, opener: bytes, min_lines: int = MIN_RECORDS
):
    """(events with ``_row``, taken rows, Lines, {row: envelope document}) or None when
    the chunk is not provably read by Arrow as orjson reads it. A module with
    ``arrow_envelopes`` has the records of the envelopes it opens read in place of
    their lines (the envelopes, parsed on the way, are returned for the residual)."""
    import io

    import pyarrow.json as pj

    lines = split_lines(chunk)
    if lines is None or len(lines) < max(min_lines, 1):
        return None
    buf = np.frombuffer(chunk, np.uint8)
    first, last = buf[lines.starts], buf[np.maximum(lines.ends - 1, 0)]
    closer = {b"{": ord("}"), b"[": ord("]")}[opener]
    if np.any(lines.ends <= lines.starts) or np.any(first != opener[0]) or np.any(last != closer):
        return None  # blank lines, padding, \r, or a line that is not one value
    if not is_utf8(chunk):
        return None
    # records in envelopes (SES in SNS) read in place of their envelope's line
    opened = module.arrow_envelopes(chunk, lines) if hasattr(module, "arrow_envelopes") else {}
    read_lines, own_time = lines, None
    if opened:
        pieces, pos = [], 0
        for i in sorted(opened):  # the text between the opened lines as it is
            pieces += [chunk[pos : int(lines.starts[i])], opened[i][0]]
            pos = int(lines.ends[i])
        chunk = b"".join(pieces) + chunk[pos:]
        read_lines = split_lines(chunk)
        own_time = np.zeros(len(lines), dtype=bool)
        own_time[[i for i, v in opened.items() if v[2]]] = True
    if hasattr(module, "arrow_input"):  # the module rewrites the text (and says which lines)
        data, module_allowed = module.arrow_input(chunk, read_lines)
    elif hasattr(module, "arrow_allowed"):
        data, module_allowed = chunk, module.arrow_allowed(read_lines.array(), chunk)
    else:
        data, module_allowed = chunk, None
    t0 = time.perf_counter()
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=module.arrow_schema(ctx),
                unexpected_field_behavior="ignore",
                newlines_in_values=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    finally:
        PARSE_SECONDS[0] += time.perf_counter() - t0
    if table.num_rows != len(lines):
        return None
    allowed = np.ones(len(lines), dtype=bool)
    allowed[_rapidjson_only_lines(chunk, read_lines)] = False
    allowed[_maybe_too_deep(chunk, read_lines)] = False
    if module_allowed is not None:
        allowed = allowed & module_allowed
    if own_time is None:
        events, rows = module.normalize_table(table, ctx, allowed)
    else:
        events, rows = module.normalize_table(table, ctx, allowed, own_time)
    return events, rows, lines, {i: v[1] for i, v in opened.items()}


def normalize_chunk_arrow(
    chunk: bytes,
    ctx: NormalizeSettings,
    *,
    modules=None,
    with_lines: bool = False,
    min_lines: int = MIN_RECORDS,
):
    """Tier 1 for the chunk, or None (the chunk then takes :func:`normalize_chunk`'s
    record path). Returns a FastResult whose residual holds the records of every line
    it did not take, as ``iter_records`` yields them."""
    from ..records import parse_json

    for module in modules if modules is not None else _modules():
        if not hasattr(module, "arrow_schema"):
            continue
        opener = module.ARROW_OPENER
        if chunk[:1] != opener or not module.arrow_sniff(chunk):
            continue
        try:
            got = _arrow_tier(chunk, ctx, module, opener, min_lines)
        except Exception as exc:  # noqa: BLE001 - a fast-path bug must not lose records:
            # the chunk takes the record path instead (the error's type only, as above)
            log.warning(
                "Arrow tier for %s failed (%s); the chunk takes the record path",
                module.PROVIDER,
                type(exc).__name__,
            )
            return None
        if got is None:
            return None
        events, rows, lines, envelopes = got
        if events is None:
            events = EVENT_SCHEMA.empty_table().append_column("_row", pa.array([], pa.int64()))
        taken = np.zeros(len(lines), dtype=bool)
        taken[rows] = True
        # iter_records reads a chunk as NDJSON when its first line is JSON on its own
        if not taken[0] and parse_json(lines.raw(0))[1] is not None:
            return None
        residual = []
        t0 = time.perf_counter()
        for i in np.flatnonzero(~taken):
            raw = lines.raw(int(i))
            if int(i) in envelopes:  # parsed already, by the same parser
                doc, err = envelopes[int(i)], None
            else:
                doc, err = parse_json(raw)
            residual.append(RawRecord(int(i) + 1, raw, doc, err))
        PARSE_SECONDS[0] += time.perf_counter() - t0
        if with_lines:
            events = events.append_column("_line", pc.add(events["_row"], 1))
        events = events.drop_columns(["_row"])
        return FastResult(
            events,
            {module.PROVIDER: events.num_rows} if events.num_rows else {},
            residual,
            records_fast=int(taken.sum()),
        )
    return None
