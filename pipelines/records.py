"""Splitting archive files into raw records.

An archive file holds either one JSON document (possibly pretty-printed over many
lines, like a saved webhook body) or one record per line (NDJSON, as the
collector, Firehose and SQS dumps write them); plain or gzip-compressed. Each
record keeps the 1-based line where it starts, so a dead letter can point at it.
"""
from __future__ import annotations

import gzip
import json
import zlib
from typing import Any, Iterator, NamedTuple

import orjson

GZIP_MAGIC = b"\x1f\x8b"


class RawRecord(NamedTuple):
    line: int
    raw: bytes
    doc: Any  # the parsed JSON value, or None when ``error`` is set
    error: str | None


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


def parse_json(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, reason). orjson first; stdlib json for what orjson refuses
    but JSON allows in practice (integers beyond 64 bits)."""
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        first = exc
    try:
        return _without_lone_surrogates(
            json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError:
        msg = str(first).split(":")[0] if str(first) else "invalid JSON"
        return None, f"not JSON: {msg}"
    except (ValueError, RecursionError) as exc:  # NaN / Infinity, or nested too deep
        return None, f"not JSON: {exc or type(exc).__name__}"


def _without_lone_surrogates(value: Any) -> Any:
    """``"\\ud800"`` is valid JSON text but not encodable text: the stdlib decodes it to a
    lone surrogate that later breaks hashing and serialisation. Replace with U+FFFD."""
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


def iter_records(data: bytes) -> Iterator[RawRecord]:
    """Records of one (already decompressed) file, in order.

    NDJSON (one record per line) is the fast path. When a line is not JSON on its
    own, the file is read as a sequence of (possibly pretty-printed, possibly
    concatenated) documents instead; a broken document becomes one dead-letter
    record and reading resumes at the next line that starts a document, so one bad
    document never takes the good ones around it down with it.
    """
    if not data.strip():
        return
    lines = data.split(b"\n")
    nonblank = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    if len(nonblank) > 1:
        first_doc, first_err = parse_json(nonblank[0][1])
        if first_err is not None:
            docs = _concatenated_documents(data)
            if docs is not None:
                yield from docs
                return
        for i, ln in nonblank:
            raw = ln.rstrip(b"\r")
            doc, err = parse_json(raw)
            yield RawRecord(i, raw, doc, err)
        return
    i, ln = nonblank[0]
    raw = ln.rstrip(b"\r")
    doc, err = parse_json(raw)
    if err is not None and err != "not UTF-8 text":
        # ``{...}{...}`` on one line (bodies appended without a newline).
        docs = _concatenated_documents(data)
        if docs is not None and any(d.error is None for d in docs):
            yield from docs
            return
    yield RawRecord(i, raw, doc, err)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # as orjson: no NaN / Infinity


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _concatenated_documents(data: bytes) -> list[RawRecord] | None:
    """Decode ``{...}\\n{...}`` (pretty-printed) documents; None when not UTF-8 text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[RawRecord] = []
    pos, n = 0, len(text)
    line, counted_to = 1, 0  # line number of ``pos``, counted incrementally
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            doc, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            end = _next_document_start(text, pos)
            out.extend(_bad_chunk(text[pos:end], line,
                                  f"not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"))
        except (ValueError, RecursionError) as exc:
            end = _next_document_start(text, pos)
            out.extend(_bad_chunk(text[pos:end], line, f"not JSON: {exc}"))
        else:
            out.append(RawRecord(line, text[pos:end].encode("utf-8", "surrogatepass"),
                                 _without_lone_surrogates(doc), None))
        pos = end
    return out


def _next_document_start(text: str, pos: int) -> int:
    """Where the next document after a broken one starts: the next line beginning
    with ``{`` or ``[`` (pretty-printers indent everything inside a document)."""
    best = len(text)
    for opener in ("\n{", "\n["):
        k = text.find(opener, pos + 1)
        if 0 <= k < best:
            best = k + 1
    return best


def _bad_chunk(chunk: str, line: int, reason: str) -> list[RawRecord]:
    """A span that did not decode. Unindented lines are NDJSON-like records of their own
    (each gets its own reason); an indented span is one broken pretty-printed document."""
    raw = chunk.rstrip()
    parts = raw.split("\n")
    if len(parts) > 1 and not any(p[:1].isspace() for p in parts if p.strip()):
        recs = []
        for k, part in enumerate(parts):
            if part.strip():
                b = part.rstrip("\r").encode("utf-8", "surrogatepass")
                doc, err = parse_json(b)
                recs.append(RawRecord(line + k, b, doc, err))
        return recs
    return [RawRecord(line, raw.encode("utf-8", "surrogatepass"), None, reason)]
