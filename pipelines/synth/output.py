"""Writing the archive: encoded events buffered per arrival slot (spilling far-future
slots to temporary files past a byte budget) and hour files written gzip'd with ``mtime=0``.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from heapq import heappop, heappush
from pathlib import Path

from .model import SLOT_MS


class _Buckets:
    """Encoded events per (provider, arrival slot); far-future slots spill to disk once
    the buffer passes a byte budget.

    An entry is ``(arrival ms, sequence, kind, events, payload)``: sorting sorts by
    arrival, ties by generation order (sequences are unique).
    """

    OVERHEAD = 120  # bytes a buffered entry costs beyond its payload

    def __init__(self, spill_bytes: int):
        self.mem: dict[tuple[int, int], list[tuple]] = {}
        self.mem_bytes = 0
        self.spill_bytes = spill_bytes
        self.spill_at = spill_bytes
        #: slots before this one are about to be written: they stay in memory
        self.keep_below = 0
        self.spilled: dict[tuple[int, int], str] = {}
        #: (slot, provider) of every bucket held (in memory or spilled), a heap
        self.heap: list[tuple[int, int]] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.seq = 0

    def put(self, provider: int, arrival_ms: int, kind: bytes, count: int, payload: bytes) -> None:
        self.seq += 1
        key = (provider, arrival_ms // SLOT_MS)
        lst = self.mem.get(key)
        if lst is None:
            lst = self.mem[key] = []
            if key not in self.spilled:
                heappush(self.heap, (key[1], provider))
        lst.append((arrival_ms, self.seq, kind, count, payload))
        self.mem_bytes += len(payload) + self.OVERHEAD
        if self.mem_bytes > self.spill_at:
            self.spill()

    def spill(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mailpulse-synth-")
        kept: dict[tuple[int, int], list[tuple]] = {}
        kept_bytes = 0
        for key, lst in self.mem.items():
            if not lst:
                continue
            if key[1] < self.keep_below:
                kept[key] = lst
                kept_bytes += sum(len(e[4]) + self.OVERHEAD for e in lst)
                continue
            path = self.spilled.get(key)
            if path is None:
                path = self.spilled[key] = os.path.join(self._tmp.name, f"{key[0]}-{key[1]}")
            with open(path, "ab") as f:  # payloads are compact JSON: no newlines inside
                f.write(b"".join([b"%d %d %s%d %s\n" % e for e in lst]))
        self.mem = kept
        self.mem_bytes = kept_bytes
        self.spill_at = kept_bytes + self.spill_bytes

    def pop_before(self, slot: int) -> tuple[int, int] | None:
        """The earliest (provider, slot) before ``slot``, in (slot, provider) order."""
        if self.heap and self.heap[0][0] < slot:
            sl, provider = heappop(self.heap)
            return provider, sl
        return None

    def take(self, key: tuple[int, int]) -> list[tuple]:
        entries: list[tuple] = []
        path = self.spilled.pop(key, None)
        if path is not None:
            with open(path, "rb") as f:
                for line in f.read().split(b"\n")[:-1]:
                    arr, seq, kn, payload = line.split(b" ", 3)
                    entries.append((int(arr), int(seq), kn[:1], int(kn[1:]), payload))
            os.remove(path)
        lst = self.mem.pop(key, None)
        if lst:
            self.mem_bytes -= sum(len(e[4]) + self.OVERHEAD for e in lst)
            entries.extend(lst)
        entries.sort()
        return entries

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


_SG_KIND, _SG_POST = b"e", b"R"
_SES_KIND = b"r"
_CMC_KIND = {b"d": b"deliveries", b"b": b"bounces", b"k": b"blocks"}


def _write_gzip(path: Path, data: bytes, level: int) -> int:
    blob = gzip.compress(data, compresslevel=level, mtime=0)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return len(blob)
