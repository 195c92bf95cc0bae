"""Benchmark: address redaction (``redact_addresses``) is linear in the text's length.

Times redaction of hostile texts at 10 KB, 100 KB, 1 MB and 10 MB, in one run:

- ``word-run``: long runs of word characters with an occasional ``@`` / ``%40`` (what made
  the old pattern rescan: a 150 KB tracked URL carrying an encoded address);
- ``dense``: addresses back to back in every encoding (``a@b``, ``%40``, ``%2540``,
  ``\\u0040``, ``&#64;``, ``&#x40;``), the most work per character;
- ``no-at``: ordinary text without any at-sign (the common case).

For each it prints the seconds and the time per MB; linear time shows as a flat
microseconds-per-KB column (the old pattern went 0.49 s -> 7.9 s from 10k to 40k).

    python benchmarks/bench_redaction.py [--sizes 10000,100000,1000000,10000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.normalizers.base import redact_addresses  # noqa: E402

ENCODED = (
    "alex@example.com ",
    "alex%40example.com&",
    "alex%2540example.com ",
    "alex\\u0040example.com ",
    "alex&#64;example.com ",
    "alex&#x40;example.com ",
)


def word_run(size: int) -> str:
    block = "a" * 9_990 + "x%40y.com "
    return (block * (size // len(block) + 1))[:size]


def dense(size: int) -> str:
    block = "".join(ENCODED)
    return (block * (size // len(block) + 1))[:size]


def no_at(size: int) -> str:
    block = "550 5.1.1 The email account that you tried to reach does not exist. "
    return (block * (size // len(block) + 1))[:size]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    redact_addresses(dense(1000) + no_at(1000))  # compile the patterns before timing
    print(f"{'text':<10}{'size':>12}{'seconds':>10}{'us/KB':>9}{'ratio':>8}")
    for name, make in (("word-run", word_run), ("dense", dense), ("no-at", no_at)):
        first = None
        for size in sizes:
            text = make(size)
            secs = float("inf")
            for _ in range(3):  # best of three: the machine is shared
                t0 = time.perf_counter()
                out = redact_addresses(text)
                secs = min(secs, time.perf_counter() - t0)
            assert "alex" not in out  # every local part went (word-run has none)
            per_kb = secs / (size / 1000) * 1e6
            first = first or per_kb
            print(f"{name:<10}{size:>12,}{secs:>10.4f}{per_kb:>9.2f}{per_kb / first:>8.2f}")
    print("ratio: us/KB relative to the smallest size (about 1 everywhere = linear)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
