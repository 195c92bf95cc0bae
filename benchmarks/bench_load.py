"""Benchmark: `mailpulse load` against DuckDB's own SQL on the same archive files.

Generates synthetic archives with `mailpulse synth` (0.5M and 2M events by default),
then, side by side in one run:

- `mailpulse load --json` into a fresh DuckDB file (the whole job: Beam pipeline,
  normalization, dedupe, atomic commit), and
- what a user would write instead: DuckDB `read_json` over the same files -> Parquet
  (no normalization, no hashing, no dedupe: a lower bound on the work),

and prints events/s of both, the ratio, and the peak memory (max RSS) of the load.
Each command runs in its own process; the ratio is what to compare across machines.

    python benchmarks/bench_load.py [--sizes 500000,2000000] [--workdir .bench]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"

DUCKDB_SQL = {
    # SendGrid: one POST body (a JSON array of events) per line.
    "sendgrid": "SELECT unnest(json, recursive := true) FROM read_json({glob}, "
                "format='newline_delimited', records=false, ignore_errors=true)",
    # SES (Firehose records) and CMC (webhook bodies): one object per line.
    "ses": "SELECT * FROM read_json({glob}, format='newline_delimited', union_by_name=true, "
           "ignore_errors=true)",
    "cmc": "SELECT unnest(event.deliveries, recursive := true) FROM read_json({glob}, "
           "format='newline_delimited', union_by_name=true, ignore_errors=true) "
           "WHERE event.deliveries IS NOT NULL",
}


def run_measured(cmd: list[str], env=None) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of a command in its own process."""
    probe = ("import resource, subprocess, sys, time, json;"
             "t=time.perf_counter();"
             "p=subprocess.run(sys.argv[1:], capture_output=True, text=True);"
             "el=time.perf_counter()-t;"
             "sys.stderr.write(p.stderr[-2000:]) if p.returncode else None;"
             "print(json.dumps({'rc': p.returncode, 's': el, 'out': p.stdout,"
             " 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                         env=env)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if doc["rc"] != 0:
        raise SystemExit(f"command failed ({doc['rc']}): {' '.join(cmd)}\n{out.stderr}")
    return doc["s"], doc["rss"] // 1024, doc["out"]


def mailpulse(*args) -> list[str]:
    return [sys.executable, "-m", "pipelines", *map(str, args)]


def synth(workdir: Path, events: int, env) -> Path:
    out = workdir / f"archive-{events}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    # synth writes about 2.8 events per message across the three providers
    messages = max(int(events / 2.7), 1)
    subprocess.run(mailpulse("synth", "--out", out, "--date", DAY, "--messages", messages,
                             "--seed", 7), check=True, env=env, stdout=subprocess.DEVNULL)
    (out / ".complete").touch()
    return out


def duckdb_rate(archive: Path, workdir: Path) -> tuple[float, int]:
    y, m, d = DAY.split("-")
    parts = []
    for prov, sql in DUCKDB_SQL.items():
        files = list((archive / prov / y / m / d).glob("*/*.json*"))
        if files:
            glob = "'" + str(archive / prov / y / m / d / "*" / "*.json*") + "'"
            parts.append((prov, sql.format(glob=glob)))
    script = ["import duckdb, sys", "con = duckdb.connect()", "n = 0"]
    for i, (prov, sql) in enumerate(parts):
        target = workdir / f"duck-{prov}.parquet"
        script.append(f"con.execute({f'COPY ({sql}) TO {str(target)!r} (FORMAT parquet)'!r})")
        script.append(f"n += con.execute(\"SELECT count(*) FROM '{target}'\").fetchone()[0]")
    script.append("print(n)")
    secs, _rss, out = run_measured([sys.executable, "-c", "\n".join(script)])
    return secs, int(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500000,2000000", help="events per archive")
    ap.add_argument("--workdir", default=str(ROOT / ".bench"))
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_HASH_KEY="bench-key")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        archive = synth(workdir, size, env)
        wh = workdir / f"wh-{size}.duckdb"
        for p in (wh, Path(str(wh) + ".wal")):
            p.unlink(missing_ok=True)
        load_s, rss, out = run_measured(
            mailpulse("load", "--archive", archive, "--date", DAY, "--warehouse",
                      f"duckdb://{wh}", "--json"), env=env)
        report = json.loads(out.strip().splitlines()[-1])
        events = report["records_read"]
        duck_s, duck_rows = duckdb_rate(archive, workdir)
        rows.append({"target_events": size, "events": events, "load_s": round(load_s, 2),
                     "load_events_per_s": round(events / load_s),
                     "duckdb_s": round(duck_s, 2), "duckdb_rows": duck_rows,
                     "duckdb_events_per_s": round(events / duck_s),
                     "ratio": round((events / load_s) / (events / duck_s), 3),
                     "load_peak_rss_mib": rss, "adds_up": report["adds_up"]})
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'events':>10} {'load ev/s':>10} {'duckdb ev/s':>12} {'ratio':>6} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['events']:>10,} {r['load_events_per_s']:>10,} {r['duckdb_events_per_s']:>12,} "
              f"{r['ratio']:>6.2f} {r['load_peak_rss_mib']:>9,}")
    print("ratio = mailpulse load events/s / DuckDB read_json->Parquet events/s "
          "(target >= 0.5); peak memory should not grow with the archive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
