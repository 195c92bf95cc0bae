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
    if data[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            # A truncated gzip (a file cut off mid-write): keep what decompresses.
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                return d.decompress(data)
            except zlib.error:
                return b""
    return data


def parse_json(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, reason). orjson first; stdlib json for what orjson refuses
    but JSON allows in practice (integers beyond 64 bits)."""
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        first = exc
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (ValueError, RecursionError):
        msg = str(first).split(":")[0] if str(first) else "invalid JSON"
        return None, f"not JSON: {msg}"


def iter_records(data: bytes) -> Iterator[RawRecord]:
    """Records of one (already decompressed) file, in order."""
    if not data.strip():
        return
    lines = data.split(b"\n")
    nonblank = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    if len(nonblank) > 1:
        first_doc, first_err = parse_json(nonblank[0][1])
        if first_err is not None:
            # Maybe one pretty-printed document, or several concatenated ones.
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
    yield RawRecord(i, raw, doc, err)


def _concatenated_documents(data: bytes) -> list[RawRecord] | None:
    """Decode ``{...}\\n{...}`` pretty-printed documents; None when the file is not that."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    out: list[RawRecord] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        try:
            doc, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return None
        line = text.count("\n", 0, pos) + 1
        out.append(RawRecord(line, text[pos:end].encode("utf-8"), doc, None))
        pos = end
    return out
