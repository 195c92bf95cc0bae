"""Splitting archive files into raw records, with bounded memory and bounded work.

An archive file holds JSON records: one per line (NDJSON, as the collector, SES's
Firehose stream and SQS dumps write them), back to back without a delimiter
(``{...}{...}``, how Kinesis Data Firehose concatenates other producers' records), or
pretty-printed over several lines (a saved webhook body), in any mix; plain or gzip
(told by the bytes, not the name). Each record keeps the 1-based line where it starts,
so a dead letter can point at it.

Whatever a file holds, reading it is bounded (docs/poison-records.md):

- A file is read as a stream (:func:`read_blocks`: decompressed as it goes) and cut
  into chunks on record boundaries (:func:`read_chunks`); a chunk holds at most
  ``chunk_lines`` records and about ``chunk_bytes`` bytes.
- A record over ``max_record_bytes`` (``--max-record-bytes``, default the collector's
  body limit) is never held whole nor parsed: it is skipped to its end and becomes a
  :class:`SkippedRecord` (a preview of its first bytes, its length, the reason).
- JSON nested deeper than :data:`MAX_JSON_DEPTH` is not parsed into objects: it becomes
  a dead letter with that reason (nothing downstream recurses on untrusted depth).
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from typing import Any, BinaryIO, Iterable, Iterator, NamedTuple

import orjson

try:  # inflate about twice as fast as zlib, with zlib's API and messages
    from zlib_ng import zlib_ng as _inflate
except ImportError:  # pragma: no cover - zlib-ng is a core dependency (setup.py)
    _inflate = zlib

#: What a corrupt stream raises, from either library.
_INFLATE_ERRORS = (zlib.error, _inflate.error)

GZIP_MAGIC = b"\x1f\x8b"
#: The collector's body limit (``pipelines.collector.app.DEFAULT_MAX_BODY_BYTES``): a
#: record the collector would accept is never too large to load.
DEFAULT_MAX_RECORD_BYTES = 10 * 1024 * 1024
#: Records per chunk (one pipeline element) by default.
DEFAULT_CHUNK_LINES = 5_000
#: A chunk is closed at the first record boundary after this many bytes.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
#: Bytes read (and decompressed) at a time.
READ_BLOCK = 1024 * 1024
#: The deepest nesting read: the most orjson writes back (a dead letter's raw text is
#: serialised), far above any provider payload (under 10 levels).
MAX_JSON_DEPTH = 254
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels; not parsed"
#: A skipped record keeps this many of its first bytes (dead letters keep a preview).
PREVIEW_BYTES = 8192


class RawRecord(NamedTuple):
    line: int
    raw: bytes
    doc: Any  # the parsed JSON value, or None when ``error`` is set
    error: str | None


class SkippedRecord(NamedTuple):
    """A record that was not held whole: a chunk of its own (see :func:`read_chunks`)."""

    size: int | None  # its length in bytes (None: unknown, e.g. the rest of a corrupt gzip)
    preview: bytes  # its first bytes (at most PREVIEW_BYTES)
    reason: str


class RawPreview(bytes):
    """The first bytes of a record that was not held whole; ``total_bytes`` is its length."""

    total_bytes: int | None

    def __new__(cls, head: bytes, total_bytes: int | None):
        obj = super().__new__(cls, head)
        obj.total_bytes = total_bytes
        return obj


def too_large(size: int, limit: int) -> str:
    return (
        f"record of {size:,} bytes is over the {limit:,}-byte limit "
        f"(--max-record-bytes); not parsed"
    )


# -- decompression --------------------------------------------------------------------


def decompress(data: bytes) -> bytes:
    """Gunzip when the bytes are gzip (by magic number, not by file name)."""
    return decompress_checked(data)[0]


def decompress_checked(data: bytes) -> tuple[bytes, str | None]:
    """(bytes, None), or (what could be recovered, why the rest could not).

    A truncated gzip (a file cut off mid-write) keeps what decompresses; a corrupt one
    keeps nothing. Either way the reason lets the caller record a dead letter instead
    of losing the tail of the file silently.
    """
    if data[:2] != GZIP_MAGIC:
        return data, None
    try:
        return gzip.decompress(data), None
    except (OSError, EOFError, zlib.error) as exc:
        first = exc
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data)
    except zlib.error as exc:
        return b"", f"corrupt gzip data ({exc}); re-fetch the file"
    if d.eof and d.unused_data:
        # A complete first member followed by more (concatenated members or garbage).
        return out, f"gzip data after the first member is unreadable ({first})"
    return out, f"gzip stream truncated after {len(out)} bytes ({first}); re-fetch the file"


class read_blocks:  # noqa: N801 - used like a generator function
    """The bytes of one open file in blocks of at most ``block`` bytes, gunzipped as they
    are read when they start with the gzip magic number (members one after another, as
    ``gzip`` writes appends). Never holds more than about two blocks, however well the
    data compresses. After iteration, ``problem`` says why the rest could not be read
    (corrupt or truncated gzip), or is None."""

    def __init__(self, fh: BinaryIO, block: int = READ_BLOCK):
        self.fh, self.block = fh, block
        self.problem: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        first = self.fh.read(self.block)
        while 0 < len(first) < 2:
            more = self.fh.read(self.block)
            if not more:
                break
            first += more
        if first[:2] != GZIP_MAGIC:
            while first:
                yield first
                first = self.fh.read(self.block)
            return
        yield from self._gunzip(first)

    def _gunzip(self, data: bytes) -> Iterator[bytes]:
        d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
        out_bytes = 0
        while True:
            try:
                while data:
                    out = d.decompress(data, self.block)
                    if out:
                        out_bytes += len(out)
                        yield out
                    if d.eof:
                        data = d.unused_data
                        while 0 < len(data) < 2:
                            more = self.fh.read(self.block)
                            if not more:
                                break
                            data += more
                        if not data:
                            break
                        if data[:2] != GZIP_MAGIC:
                            self.problem = (
                                f"data after gzip member ending at {out_bytes:,} "
                                "bytes is not gzip; re-fetch the file"
                            )
                            return
                        d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
                        continue
                    data = d.unconsumed_tail
            except _INFLATE_ERRORS as exc:
                self.problem = (
                    f"corrupt gzip data after {out_bytes:,} bytes ({exc}); re-fetch the file"
                )
                return
            data = self.fh.read(self.block)
            if not data:
                if not d.eof:
                    self.problem = (
                        f"gzip stream truncated after {out_bytes:,} bytes; re-fetch the file"
                    )
                return


# -- parsing one record ---------------------------------------------------------------


def parse_json(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, reason). orjson first; stdlib json for what orjson refuses
    but JSON allows in practice (integers beyond 64 bits, lone surrogates). Nesting
    deeper than :data:`MAX_JSON_DEPTH` is refused with :data:`TOO_DEEP`."""
    doc, err, _ = _parse(raw)
    return doc, err


def _parse(raw, positions: bool = False) -> tuple[Any, str | None, str | None]:
    """(value, reason, kind): kind is None (parsed), ``deep`` or ``invalid``. With
    ``positions``, a reason says where in the record the error is (line and column)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("depth limit"):
            return None, TOO_DEEP, "deep"
        if exc.msg.startswith(("unexpected content after document", "unexpected end of data")):
            # not one whole document: the stdlib would not read it either
            return None, f"not JSON: {exc.msg}", "invalid"
        first = exc
    else:
        if _deeper_than_limit(raw, doc):
            return None, TOO_DEEP, "deep"
        return doc, None, None
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text", "invalid"
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        if positions:
            return (
                None,
                (f"not JSON: {exc.msg} (line {exc.lineno} column {exc.colno} of the record)"),
                "invalid",
            )
        msg = str(first).split(":")[0] if str(first) else "invalid JSON"
        return None, f"not JSON: {msg}", "invalid"
    except RecursionError:
        return None, TOO_DEEP, "deep"
    except ValueError as exc:  # NaN / Infinity
        return None, f"not JSON: {exc or type(exc).__name__}", "invalid"
    if not _depth_within(doc, MAX_JSON_DEPTH):
        return None, TOO_DEEP, "deep"
    return _without_lone_surrogates(doc), None, None


def _deeper_than_limit(raw, doc: Any) -> bool:
    """Whether a value orjson read nests deeper than MAX_JSON_DEPTH. Only a text with that
    many brackets can; then orjson's own writer (which stops at MAX_JSON_DEPTH) decides."""
    if not isinstance(doc, (list, dict)) or raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    try:
        orjson.dumps(doc)
    except TypeError:
        return True
    return False


def _depth_within(doc: Any, limit: int) -> bool:
    """Iterative (no recursion on untrusted depth)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                return False
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (list, dict)))
    return True


def _without_lone_surrogates(value: Any) -> Any:
    """``"\\ud800"`` is valid JSON text but not encodable text: the stdlib decodes it to a
    lone surrogate that later breaks hashing and serialisation. Replace with U+FFFD.
    (Recursion bounded: only values within MAX_JSON_DEPTH get here.)"""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # as orjson: no NaN / Infinity


# -- finding where a document ends ----------------------------------------------------

_OUTSIDE = re.compile(rb'[\[\]{}"]')
_IN_STRING = re.compile(rb'["\\]')
#: The rest of a string after its opening quote, escapes included, up to the closing quote.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_WS = re.compile(rb"[ \t\r\n]*")
_OPENERS = (0x7B, 0x5B)  # { [
#: A line that may start a record: anything but whitespace or what continues a document
#: (closing brackets, commas, strings, numbers). Pretty-printers indent what is inside a
#: document, so such a line never falls inside one. Chunks are cut only before them.
_CONTINUES = frozenset(b' \t\r\n}],"-0123456789')
_NEXT_RECORD_LINE = re.compile(rb'\n(?=[^ \t\r\n}\],"\-0-9])')


NEEDS_MORE = -1


def document_end(
    data, pos: int, end: int, hint: int = 4096, ascii_only: bool | None = None
) -> int | None:
    """End of the JSON document at ``data[pos]`` (an opening bracket), found by orjson on
    a window of ``data[pos:end]`` that grows from ``hint`` bytes (about the size of the
    documents around it): orjson stops where the document stops and says where that is.
    :data:`NEEDS_MORE` when the document goes on past ``end``; None when orjson cannot
    tell (a broken document, or one nested past its limit): use :func:`scan_document`.
    Work stays linear: each try reads at most four times the bytes of the one before."""
    mv = memoryview(data)
    width = max(hint, 4096)
    while True:
        stop = min(end, pos + width)
        window = mv[pos:stop]
        try:
            orjson.loads(window)
        except orjson.JSONDecodeError as exc:
            if exc.msg.startswith("unexpected content after document"):
                k = exc.pos  # in characters
                if not (ascii_only if ascii_only is not None else bytes(window[:k]).isascii()):
                    k = len(bytes(window).decode("utf-8", "ignore")[:k].encode("utf-8"))
                stop = pos + k
                break
            if exc.msg.startswith("unexpected end of data"):
                if stop >= end:
                    return NEEDS_MORE
                width *= 4
                continue
            return None
        break
    while stop > pos and data[stop - 1] in b" \t\r\n":
        stop -= 1
    return stop


def scan_document(
    data, pos: int, end: int, depth: int = 0, in_string: bool = False, max_depth: int | None = None
) -> tuple[str, int, int, bool]:
    """Where the JSON document at ``data[pos]`` (an opening bracket, or a resumed state)
    closes, without parsing it: ``("closed", end_of_document, 0, False)``; ``("open", p,
    depth, in_string)`` when ``end`` comes first (resume from ``p`` with the same state
    once more data is there); ``("deep", p, depth, False)`` past ``max_depth`` (if given).

    Bounded work per byte and no recursion: depth is a counter, strings are skipped by
    one regex each, other bytes by a search for the next bracket or quote.
    """
    while True:
        if in_string:
            m = _STRING_REST.match(data, pos, end)
            if m is not None:
                pos, in_string = m.end(), False
                continue
            # the string does not close before ``end``: resume at its last escape or here
            while True:
                m = _IN_STRING.search(data, pos, end)
                if m is None:
                    return "open", end, depth, True
                i = m.start()
                if data[i] == 0x5C:  # backslash: skip the escaped byte
                    if i + 1 >= end:
                        return "open", i, depth, True
                    pos = i + 2
                    continue
                pos, in_string = i + 1, False
                break
            continue
        m = _OUTSIDE.search(data, pos, end)
        if m is None:
            return "open", end, depth, False
        i = m.start()
        c = data[i]
        if c == 0x22:
            pos, in_string = i + 1, True
            continue
        if c in _OPENERS:
            depth += 1
            if max_depth is not None and depth > max_depth:
                return "deep", i, depth, False
        else:
            depth -= 1
            if depth <= 0:
                return "closed", i + 1, 0, False
        pos = i + 1


# -- records of one chunk -------------------------------------------------------------


def iter_records(data) -> Iterator[RawRecord]:
    """Records of one (already decompressed) chunk or file, in order.

    Line by line: a line that is one JSON value is a record (the NDJSON fast path). A
    line that starts with ``{`` or ``[`` but is not one value holds documents back to
    back (``{...}{...}``), or a document that goes on over the next lines (pretty-
    printed), or a truncated one: each document found is a record, and a document that
    is not closed by the next line that starts a record is a dead letter up to there. So
    one bad document never takes the good ones around it down with it, on any line, and
    whatever the first line of the file looked like.

    ``data`` may also be a :class:`SkippedRecord` (a chunk of its own): one record whose
    ``raw`` is a :class:`RawPreview`.
    """
    if isinstance(data, SkippedRecord):
        yield RawRecord(1, RawPreview(data.preview, data.size), None, data.reason)
        return
    n = len(data)
    pos, line = 0, 1
    ascii_only, hint = data.isascii(), 4096
    after_document = False  # ``pos`` follows a document on the same line
    eol = stop = -1  # end of the current line; start of the next line that starts a record
    while True:
        ws_end = _WS.match(data, pos).end()
        if ws_end > pos:
            skipped_lines = data.count(b"\n", pos, ws_end)
            line += skipped_lines
            after_document = after_document and not skipped_lines
            pos = ws_end
        if pos >= n:
            return
        if pos > eol:
            nl = data.find(b"\n", pos)
            eol = n if nl < 0 else nl
        opener = data[pos] in _OPENERS
        line_err = None
        if not (after_document and opener):
            raw = data[pos:eol].rstrip()
            doc, line_err, _ = _parse(raw)
            if line_err is None or not opener:
                yield RawRecord(line, raw, doc, line_err)
                pos, after_document = eol, False
                continue
        # Documents back to back, or one going on over the next lines, or a broken one.
        if stop < eol:
            m = _NEXT_RECORD_LINE.search(data, eol)
            stop = n if m is None else m.start() + 1
        end = document_end(data, pos, stop, hint, ascii_only)
        if end is not None and end != NEEDS_MORE:
            status = "closed"
            hint = 2 * (end - pos)
        else:
            status, end, _, _ = scan_document(data, pos, stop)
        if status == "closed":
            if line_err is not None and end <= eol and _WS.match(data, end, eol).end() == eol:
                # the line is one document after all, a bad one
                yield RawRecord(line, raw, None, line_err)
                pos, after_document = eol, False
                continue
            raw = data[pos:end]
            multiline = end > eol
            doc, err, _ = _parse(raw, positions=multiline)
            yield RawRecord(line, raw, doc, err)
            if multiline:
                line += raw.count(b"\n")
            pos, after_document = end, True
            continue
        raw = data[pos:stop].rstrip()
        multiline = b"\n" in raw
        err = line_err if (line_err and not multiline) else _parse(raw, positions=multiline)[1]
        yield RawRecord(line, raw, None, err or "not JSON: the document is not closed")
        line += data.count(b"\n", pos, stop)
        pos, after_document = stop, False


# -- chunks of one file, read as a stream ---------------------------------------------


class _Stream:
    """Decompressed bytes in blocks, consumed line by line (holding at most a line's
    limit plus a block)."""

    def __init__(self, blocks: Iterable[bytes]):
        self._blocks = iter(blocks)
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        for block in self._blocks:
            if block:
                if self._pos and self._pos * 2 >= len(self._buf):
                    del self._buf[: self._pos]
                    self._pos = 0
                self._buf += block
                return True
        self._eof = True
        return False

    def _take(self, start: int, end: int) -> bytes:
        self._pos = end
        return bytes(memoryview(self._buf)[start:end])

    def read_line(self, limit: int) -> tuple[bytes, bool]:
        """(bytes, whole): the rest of the current line with its newline when its content
        is at most ``limit`` bytes (``whole``; ``b""`` at the end of the data); otherwise
        its next ``limit`` bytes, and the line goes on."""
        searched = 0
        while True:
            buf, start = self._buf, self._pos
            i = buf.find(b"\n", start + searched, start + limit + 1)
            if i >= 0:
                return self._take(start, i + 1), True
            avail = len(buf) - start
            if avail > limit:
                return self._take(start, start + limit), False
            searched = avail
            if not self._fill():
                return self._take(start, len(buf)), True

    def unread(self, n: int) -> None:
        """Step back over the bytes the last :meth:`read_line` returned."""
        self._pos -= n

    def skip_line(self) -> int:
        """Skip to the end of the current line (past its newline); the bytes skipped."""
        skipped = 0
        while True:
            i = self._buf.find(b"\n", self._pos)
            if i >= 0:
                skipped += i + 1 - self._pos
                self._pos = i + 1
                return skipped
            skipped += len(self._buf) - self._pos
            self._pos = len(self._buf)
            if not self._fill():
                return skipped


class _Chunker:
    """The lines read but not yet emitted, and where the record being read began."""

    def __init__(self, chunk_lines: int, chunk_bytes: int, max_record_bytes: int):
        self.chunk_lines, self.chunk_bytes = max(1, chunk_lines), chunk_bytes
        self.limit = max_record_bytes
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.pending_records = 0
        self.first_line = 1  # line of pending[0]
        self.span_at = 0  # index in pending where the record being read began
        self.span_bytes = 0

    def span_complete(self) -> bool:
        """Whether the record being read is whole already, so that the lines after it
        are not part of it (as :func:`iter_records` reads them: only a document left
        open continues onto the next lines)."""
        if self.span_at >= len(self.pending):
            return True
        first = self.pending[self.span_at]
        i = _WS.match(first).end()
        if i >= len(first) or first[i] not in _OPENERS:
            return True
        span = b"".join(self.pending[self.span_at :])
        return scan_document(span, i, len(span))[0] == "closed"

    def flush(self, upto: int | None = None) -> Iterator[tuple[int, Any]]:
        """Emit pending[:upto] (all by default) as one chunk; drop the rest."""
        upto = len(self.pending) if upto is None else upto
        if upto:
            yield self.first_line, b"".join(self.pending[:upto])
        self.first_line += len(self.pending)
        self.pending.clear()
        self.pending_bytes = self.pending_records = self.span_at = self.span_bytes = 0


def read_chunks(
    blocks: Iterable[bytes],
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[tuple[int, Any]]:
    """(first line number, chunk) for one file's decompressed bytes, read as a stream.

    A chunk is the file's exact bytes for whole records (lines, or back-to-back documents
    of one long line), cut only before a line that may start a record (so a pretty-
    printed document is never split); or a :class:`SkippedRecord`: a record over
    ``max_record_bytes``, skipped to its end and never held whole. A record is a line
    that may start one plus the lines that continue it (indented, closing brackets).
    Memory stays within about ``chunk_bytes + 2 * max_record_bytes`` whatever one line
    holds.
    """
    stream = _Stream(blocks)
    ck = _Chunker(chunk_lines, chunk_bytes, max_record_bytes)
    limit = max_record_bytes
    while True:
        data, whole = stream.read_line(limit)
        if not data:
            break
        starts_record = data[0] not in _CONTINUES
        if whole:
            if starts_record:
                if ck.pending_records >= ck.chunk_lines or ck.pending_bytes >= ck.chunk_bytes:
                    yield from ck.flush()
                ck.span_at, ck.span_bytes = len(ck.pending), 0
                ck.pending_records += 1
            ck.span_bytes += len(data)
            if ck.span_bytes > limit and ck.span_at < len(ck.pending) and ck.span_complete():
                # what came before is a whole record: these lines are one of their own
                ck.span_at, ck.span_bytes = len(ck.pending), len(data)
            if ck.span_bytes <= limit or ck.span_at == len(ck.pending):  # (one line fits)
                ck.pending.append(data)
                ck.pending_bytes += len(data)
                continue
            # A record over several lines grew past the limit: skip the rest of it.
            head = b"".join(ck.pending[ck.span_at :]) + data
        elif data[0] in _OPENERS:
            # A long line that starts a document: documents back to back, or one too large.
            yield from ck.flush()
            yield from _split_long_line(stream, data, ck.first_line, ck)
            ck.first_line += 1
            continue
        else:
            if starts_record or ck.span_complete():
                ck.span_at, ck.span_bytes = len(ck.pending), 0
            head = b"".join(ck.pending[ck.span_at :]) + data
            ck.span_bytes += len(data) + stream.skip_line()
        # The record goes on over the lines that continue it; none of it is held.
        size, skip_first = ck.span_bytes, ck.first_line + ck.span_at
        yield from ck.flush(ck.span_at)
        ck.first_line = skip_first + head.count(b"\n") + (0 if whole else 1)
        nxt = b""
        while True:
            nxt, nxt_whole = stream.read_line(limit)
            if not nxt or nxt[0] not in _CONTINUES:
                break
            size += len(nxt) + (0 if nxt_whole else stream.skip_line())
            ck.first_line += 1
        yield skip_first, SkippedRecord(size, head[:PREVIEW_BYTES], too_large(size, limit))
        if not nxt:
            break
        stream.unread(len(nxt))  # it starts the next record
    yield from ck.flush()


def _split_long_line(stream, head: bytes, line_no: int, ck: _Chunker) -> Iterator[tuple[int, Any]]:
    """A line longer than the record limit that starts a document: documents back to back
    (a Firehose object without newlines), cut into chunks between documents. A document
    over the limit is skipped with the rest of the line; one nested too deep is passed on
    (:func:`iter_records` makes it a dead letter without parsing it)."""
    limit = ck.limit
    window, line_done, pos, hint = head, False, 0, 4096
    piece: list[bytes] = []
    piece_bytes = 0

    def emit():
        nonlocal piece, piece_bytes
        if piece:
            yield line_no, b"".join(piece)
        piece, piece_bytes = [], 0

    while True:
        pos = _WS.match(window, pos).end()
        if pos >= len(window):
            if line_done:
                break
            window, line_done = stream.read_line(limit)
            pos = 0
            if not window:
                break
            continue
        start = pos
        if window[start] not in _OPENERS:
            # The rest of the line is not documents: one record, kept only if small.
            rest = window[start:]
            if not line_done and len(rest) <= limit:
                more, line_done = stream.read_line(limit - len(rest))
                rest += more
            if line_done:
                piece.append(rest)
                break
            yield from emit()
            size = len(rest) + stream.skip_line()
            yield line_no, SkippedRecord(size, rest[:PREVIEW_BYTES], too_large(size, limit))
            return
        # orjson finds where the document ends; the scanner only for a broken one
        end = document_end(window, start, len(window), hint)
        while end == NEEDS_MORE and not line_done and len(window) - start < limit:
            more, line_done = stream.read_line(limit - (len(window) - start))
            window, start, pos = window[start:] + more, 0, 0
            end = document_end(window, start, len(window), hint)
        if end == NEEDS_MORE and not line_done:  # a document over the limit
            yield from emit()
            size = len(window) - start + stream.skip_line()
            yield (
                line_no,
                SkippedRecord(size, window[start : start + PREVIEW_BYTES], too_large(size, limit)),
            )
            return
        if end is not None and end != NEEDS_MORE:
            piece.append(window[start:end])
            piece_bytes += end - start
            hint, pos = 2 * (end - start), end
            if len(piece) >= ck.chunk_lines or piece_bytes >= ck.chunk_bytes:
                yield from emit()
            continue
        scan_pos, depth, in_string = start, 0, False
        while True:
            status, p, depth, in_string = scan_document(
                window, scan_pos, len(window), depth, in_string
            )
            if status == "closed":
                piece.append(window[start:p])
                piece_bytes += p - start
                pos = p
                break
            held = len(window) - start
            if not line_done and held >= limit:
                yield from emit()
                size = held + stream.skip_line()
                yield (
                    line_no,
                    SkippedRecord(
                        size, window[start : start + PREVIEW_BYTES], too_large(size, limit)
                    ),
                )
                return
            if line_done:  # the line ends inside the document: a truncated one
                piece.append(window[start:])
                pos = len(window)
                break
            more, line_done = stream.read_line(limit - held)
            window = window[start:] + more
            scan_pos, start, pos = p - start, 0, 0
        if len(piece) >= ck.chunk_lines or piece_bytes >= ck.chunk_bytes:
            yield from emit()
    yield from emit()


def split_chunks(
    data: bytes,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[tuple[int, Any]]:
    """:func:`read_chunks` of bytes already in memory: (first line number, chunk) on
    record boundaries; a pretty-printed document is never split."""
    if not data.strip():
        return iter(())
    return read_chunks([data], chunk_lines, max_record_bytes, chunk_bytes)


def read_records(
    blocks: Iterable[bytes],
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
) -> Iterator[RawRecord]:
    """Every record of one file (its decompressed bytes, in blocks), with file line
    numbers: :func:`read_chunks` then :func:`iter_records`."""
    for first, chunk in read_chunks(blocks, chunk_lines, max_record_bytes):
        for rec in iter_records(chunk):
            yield rec._replace(line=rec.line + first - 1)
