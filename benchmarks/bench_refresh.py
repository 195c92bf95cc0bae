"""Benchmark: what a refresh costs against the size of the day already loaded.

For each day size N (default 100, 1,000 and 3,500 small archive files, about 75
SendGrid events each, as a collector that rotates every minute writes them), side by side
in one run:

- load the N files (not timed), add one new file, then time `mailpulse load --date D`
  (the refresh: it must read only the new file), and
- time `mailpulse load` of that one file alone into an empty warehouse (the same work:
  one file read, normalized, committed),

and print both times and their ratio (goal: <= 2, and flat as N grows). Each load runs
as a real `mailpulse load --json` process, so start-up, listing and the manifest lookup
are all counted.

    python benchmarks/bench_refresh.py [--sizes 100,1000,3500] [--repeat 3] [--workdir .bench/refresh]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"
EVENTS_PER_FILE = 75


def write_file(path: Path, start: int) -> None:
    t0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp())
    evs = [
        {
            "email": f"user{i}@example.com",
            "timestamp": t0 + i % 86000,
            "event": "delivered",
            "sg_event_id": f"e{i}",
            "sg_message_id": f"m{i}.filter1",
            "category": ["news"],
        }
        for i in range(start, start + EVENTS_PER_FILE)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(evs).encode() + b"\n"))


def load(archive: Path, wh: str) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_HASH_KEY="bench-key")
    t = time.perf_counter()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "load",
            "--archive",
            str(archive),
            "--date",
            DAY,
            "--warehouse",
            wh,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    secs = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"load failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return secs, json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,3500")
    ap.add_argument("--workdir", default=str(ROOT / ".bench" / "refresh"))
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timings per measurement; the fastest counts (default: 3)",
    )
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        d = work / f"n{n}"
        shutil.rmtree(d, ignore_errors=True)
        day = d / "archive" / "sendgrid" / "2026" / "11" / "20"
        for i in range(n):
            write_file(day / f"{i % 24:02d}" / f"f{i:05d}.json.gz", i * EVENTS_PER_FILE)
        wh = f"duckdb://{d}/w.duckdb"
        _, first = load(d / "archive", wh)
        assert first["files_read"] == n, first
        refresh_s = alone_s = float("inf")
        for k in range(args.repeat):
            new = day / "23" / f"new{k}.json.gz"
            write_file(new, 10_000_000 + k * EVENTS_PER_FILE)
            secs, refresh = load(d / "archive", wh)
            assert (refresh["files_read"], refresh["files_skipped"]) == (1, n + k), refresh
            refresh_s = min(refresh_s, secs)
            alone = d / f"alone{k}" / "sendgrid" / "2026" / "11" / "20" / "23"
            alone.mkdir(parents=True)
            shutil.copy(new, alone / new.name)
            secs, one = load(d / f"alone{k}", f"duckdb://{d}/alone{k}.duckdb")
            assert one["events_loaded"] == refresh["events_loaded"] == EVENTS_PER_FILE
            alone_s = min(alone_s, secs)
        rows.append((n, refresh_s, alone_s, refresh_s / alone_s))
        print(
            f"day of {n:>5} files: refresh {refresh_s:6.2f} s, the new file alone "
            f"{alone_s:6.2f} s, ratio {refresh_s / alone_s:5.2f}",
            flush=True,
        )
    print()
    print("files_in_day  refresh_s  alone_s  ratio (goal <= 2, flat)")
    for n, r, a, q in rows:
        print(f"{n:>12}  {r:9.2f}  {a:7.2f}  {q:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
