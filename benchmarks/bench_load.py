"""Benchmark: `mailpulse load` against DuckDB SQL doing the same normalizing work.

Generates synthetic archives with `mailpulse synth` (0.5M and 2M events by default, all
three providers), then, side by side in one run, each in its own process:

- `mailpulse load --json` into a fresh DuckDB file (the whole job: listing, Beam pipeline,
  normalization, dedupe, staging, the atomic commit);
- what a user would write instead: DuckDB SQL over the same files that flattens each
  provider's records to one row per event, hashes the addresses (HMAC-SHA256 hex, the
  same key and address normalization as pipelines/hashing.py), splits the message ids
  (SendGrid's part before ``.filter``, CMC's without ``<>``) and writes Parquet;
- where the load's time goes: the same steps the pipeline runs (read, decompress,
  parse, normalize, dedupe, stage, commit), one after the other in one process, timed
  each (the pipeline runs them on several workers; Beam's own cost is the difference
  between its wall time and these steps divided by the workers).

Prints events/s of both, the ratio, the peak memory of the load (its largest process, and
all of its processes summed), and the step table. Each size runs the load and the DuckDB
SQL ``--repeat`` times (3), one after the other, and compares the medians (each pair's
ratio is printed too): on a shared CPU one run of either can be off by a third. The
ratio is what to compare across machines.

    python benchmarks/bench_load.py [--sizes 500000,2000000] [--workdir .bench] [--no-steps]
                                    [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"
HASH_KEY = "bench-key"

#: What the users' SQL does per provider: one row per event with the hashed address, the
#: recipient domain, the event time and the split message id. ``$o``/``$i`` are the HMAC
#: outer/inner pads of the key.
_HMAC = "sha256($o || unhex(sha256($i || encode(lower(trim({a}))))))"
_DOMAIN = "lower(split_part(trim({a}), '@', -1))"
DUCKDB_SQL = {
    "sendgrid": f"""
        SELECT e.sg_event_id AS event_id, 'sendgrid' AS provider, e.event AS event_type,
               to_timestamp(e.timestamp) AS event_ts,
               split_part(e.sg_message_id, '.filter', 1) AS message_id,
               {_HMAC.format(a="e.email")} AS email_hash, {_DOMAIN.format(a="e.email")} AS recipient_domain,
               e.reason, e.status, e.url
        FROM (SELECT unnest(json) AS e FROM read_json({{glob}}, format='newline_delimited',
              records=false, columns={{'json': 'STRUCT(sg_event_id VARCHAR, event VARCHAR,
              "timestamp" BIGINT, sg_message_id VARCHAR, email VARCHAR, reason VARCHAR,
              status VARCHAR, url VARCHAR)[]'}}, ignore_errors=true))""",
    "ses": f"""
        SELECT left(sha256(mail.messageId || eventType || r || coalesce(ts, '')), 32) AS event_id,
               'ses' AS provider, eventType AS event_type,
               CAST(ts AS TIMESTAMPTZ) AS event_ts, mail.messageId AS message_id,
               {_HMAC.format(a="r")} AS email_hash, {_DOMAIN.format(a="r")} AS recipient_domain
        FROM (SELECT eventType, mail, unnest(mail.destination) AS r,
                     coalesce(bounce.timestamp, delivery.timestamp, open.timestamp,
                              click.timestamp, deliveryDelay.timestamp, mail.timestamp) AS ts
              FROM read_json({{glob}}, format='newline_delimited', union_by_name=true,
                             ignore_errors=true)
              WHERE eventType IS NOT NULL)""",
    "cmc": f"""
        SELECT left(sha256(coalesce(d.messageId, '') || d.status || d.to || d.created), 32) AS event_id,
               'cmc' AS provider, d.status AS event_type,
               CAST(d.created AS TIMESTAMP) - INTERVAL 9 HOUR AS event_ts,
               trim(d.messageId, '<>') AS message_id,
               {_HMAC.format(a="d.to")} AS email_hash, {_DOMAIN.format(a="d.to")} AS recipient_domain
        FROM (SELECT unnest(event.deliveries) AS d FROM read_json({{glob}},
              format='newline_delimited', union_by_name=true, ignore_errors=true)
              WHERE event.deliveries IS NOT NULL)""",
}


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """(outer, inner) pads of HMAC-SHA256 for ``key`` (RFC 2104)."""
    k = key if len(key) <= 64 else hashlib.sha256(key).digest()
    k = k.ljust(64, b"\0")
    return bytes(b ^ 0x5C for b in k), bytes(b ^ 0x36 for b in k)


def _session_memory(sid: int) -> tuple[int, int]:
    """(summed PSS, largest RSS) in MiB of the processes in session ``sid``: the load's
    driver, its zygote and its workers (forked workers are re-parented to init, so only
    their session ties them to the load; ``ru_maxrss`` of the children misses them)."""
    pss_sum = largest = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[3]) != sid:
                    continue
            with open(f"/proc/{d}/status") as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        largest = max(largest, int(ln.split()[1]) // 1024)
            with open(f"/proc/{d}/smaps_rollup") as f:
                for ln in f:
                    if ln.startswith("Pss:"):
                        pss_sum += int(ln.split()[1]) // 1024
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
    return pss_sum, largest


def run_measured(cmd: list[str], env=None) -> tuple[float, dict, str]:
    """(seconds, memory in MiB, stdout) of a command in its own process and session.
    Memory: ``peak_rss`` (the largest process: ``ru_maxrss``, or the largest sampled
    RSS when that is higher) and ``peak_pss_sum`` (every process of the session summed,
    shared pages counted once), sampled every 50 ms where /proc allows."""
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "el=time.perf_counter()-t;"
        "sys.stderr.write(p.stderr[-3000:]) if p.returncode else None;"
        "print(json.dumps({'rc': p.returncode, 's': el, 'out': p.stdout,"
        " 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", probe, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    peaks = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            pss, rss = _session_memory(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], pss), max(peaks[1], rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if os.path.isdir("/proc/self"):
        sampler.start()
    stdout, stderr = proc.communicate()
    if sampler.ident is not None:
        sampler.join()
    doc = json.loads(stdout.strip().splitlines()[-1])
    if doc["rc"] != 0:
        raise SystemExit(f"command failed ({doc['rc']}): {' '.join(cmd)}\n{stderr}")
    memory = {"peak_rss": max(doc["rss"] // 1024, peaks[1]), "peak_pss_sum": peaks[0] or None}
    return doc["s"], memory, doc["out"]


def mailpulse(*args) -> list[str]:
    return [sys.executable, "-m", "pipelines", *map(str, args)]


def synth(workdir: Path, events: int, env) -> Path:
    out = workdir / f"archive-{events}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    # synth writes about 2.8 events per message across the three providers
    messages = max(int(events / 2.7), 1)
    subprocess.run(
        mailpulse("synth", "--out", out, "--date", DAY, "--messages", messages, "--seed", 7),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    (out / ".complete").touch()
    return out


_DUCK_SCRIPT = """
import duckdb, json, sys, time
args = json.loads(sys.argv[1])
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
p = {"o": bytes.fromhex(args["o"]), "i": bytes.fromhex(args["i"])}
out = {}
for prov, sql, target in args["parts"]:
    t = time.perf_counter()
    con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)", p)
    n = con.execute(f"SELECT count(*) FROM '{target}'").fetchone()[0]
    out[prov] = [n, time.perf_counter() - t]
print(json.dumps(out))
"""


def duckdb_rate(archive: Path, workdir: Path) -> tuple[float, int, dict]:
    y, m, d = DAY.split("-")
    parts = []
    for prov, sql in DUCKDB_SQL.items():
        if list((archive / prov / y / m / d).glob("*/*.json*")):
            glob = "'" + str(archive / prov / y / m / d / "*" / "*.json*") + "'"
            parts.append((prov, sql.replace("{glob}", glob), str(workdir / f"duck-{prov}.parquet")))
    o, i = hmac_pads(HASH_KEY.encode())
    arg = json.dumps({"parts": parts, "o": o.hex(), "i": i.hex()})
    secs, _mem, out = run_measured([sys.executable, "-c", _DUCK_SCRIPT, arg])
    per = json.loads(out.strip().splitlines()[-1])
    return secs, sum(n for n, _ in per.values()), per


_STEPS_SCRIPT = """
import json, os, sys, tempfile, shutil, time
from datetime import date, datetime, timezone
from pipelines import load as L
from pipelines.hashing import EmailHasher
from pipelines.normalizers import vectorized
from pipelines.records import DEFAULT_MAX_RECORD_BYTES, read_blocks, read_chunks
from pipelines.sources import archive_sources, list_days
from pipelines.warehouse import LoadBatch, open_warehouse
archive, workdir = sys.argv[1], sys.argv[2]
day = date.fromisoformat(sys.argv[3])
cfg = L.NormalizeSettings(hasher=EmailHasher(os.environ["MAILPULSE_HASH_KEY"]))
T = dict.fromkeys(["list", "read+decompress", "parse", "normalize", "dedupe", "stage",
                   "commit"], 0.0)
t = time.perf_counter()
files = list_days(archive_sources(archive), [day]).files
T["list"] = time.perf_counter() - t
stage = tempfile.mkdtemp(dir=workdir)
ing = datetime.now(timezone.utc)
norm, dd, ws = L.NormalizeChunkFn(cfg, "steps", ing), L.DropDuplicatesFn(), L.WriteStagingFn(stage)
n = 0
for f in files:
    with open(f.uri, "rb") as fh:
        chunks = read_chunks(read_blocks(fh), L.DEFAULT_CHUNK_LINES, DEFAULT_MAX_RECORD_BYTES)
        i = 0
        while True:
            t = time.perf_counter(); item = next(chunks, None)
            T["read+decompress"] += time.perf_counter() - t
            if item is None:
                break
            line, chunk = item
            t = time.perf_counter()
            nc = next(iter(norm.process((f.uri, f.provider, i, line, chunk, f.day))))
            T["normalize"] += time.perf_counter() - t
            t = time.perf_counter(); nc = next(iter(dd.process(nc))); T["dedupe"] += time.perf_counter() - t
            t = time.perf_counter(); list(ws.process(nc)); T["stage"] += time.perf_counter() - t
            n += sum(s.get("records_read", 0) for s in nc.stats.values())
            i += 1
staged = L.collect_staged(stage)
whp = os.path.join(workdir, "steps.duckdb")
for p in (whp, whp + ".wal"):
    if os.path.exists(p): os.unlink(p)
wh = open_warehouse("duckdb://" + whp); wh.ensure_schema()
batch = LoadBatch(load_id="steps", archive=archive, archive_date=day, started_at=ing,
                  event_files=staged.event_files, dead_letter_files=staged.dead_letter_files,
                  stats=staged.stats, files_read=len(files), runner="steps")
t = time.perf_counter(); wh.commit_load(batch); T["commit"] = time.perf_counter() - t
# the normalize step parses the JSON (Arrow's reader, or orjson for the record path):
# that part is reported as "parse"
T["parse"] = vectorized.PARSE_SECONDS[0]
T["normalize"] = max(T["normalize"] - T["parse"], 0.0)
shutil.rmtree(stage)
print(json.dumps({"records": n, "steps": T}))
"""


def load_steps(archive: Path, workdir: Path, env) -> dict:
    _s, _mem, out = run_measured(
        [sys.executable, "-c", _STEPS_SCRIPT, str(archive), str(workdir), DAY], env=env
    )
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500000,2000000", help="events per archive")
    ap.add_argument("--workdir", default=str(ROOT / ".bench"))
    ap.add_argument("--no-steps", action="store_true", help="skip the step breakdown")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="load and DuckDB runs per size, alternating; the medians are compared",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_HASH_KEY=HASH_KEY)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        archive = synth(workdir, size, env)
        wh = workdir / f"wh-{size}.duckdb"
        runs = []  # (load s, DuckDB s, memory), the two alternating
        for _ in range(args.repeat):
            for p in (wh, Path(str(wh) + ".wal")):
                p.unlink(missing_ok=True)
            load = ["load", "--archive", archive, "--date", DAY, "--warehouse", f"duckdb://{wh}"]
            load_s, mem, out = run_measured(mailpulse(*load, "--json"), env=env)
            report = json.loads(out.strip().splitlines()[-1])
            events = report["records_read"]
            duck_s, duck_rows, duck_per = duckdb_rate(archive, workdir)
            runs.append((load_s, duck_s, mem))
        load_s = statistics.median(r[0] for r in runs)
        duck_s = statistics.median(r[1] for r in runs)
        pss = [r[2]["peak_pss_sum"] for r in runs if r[2]["peak_pss_sum"]]
        row = {
            "target_events": size,
            "events": events,
            "load_s": round(load_s, 2),
            "load_events_per_s": round(events / load_s),
            "duckdb_s": round(duck_s, 2),
            "duckdb_rows": duck_rows,
            "duckdb_events_per_s": round(events / duck_s),
            "ratio": round((events / load_s) / (events / duck_s), 3),
            "runs": [
                {"load_s": round(a, 2), "duckdb_s": round(b, 2), "ratio": round(b / a, 3)}
                for a, b, _m in runs
            ],
            "load_peak_rss_mib": max(r[2]["peak_rss"] for r in runs),
            "load_peak_pss_sum_mib": max(pss) if pss else None,
            "adds_up": report["adds_up"],
            "duckdb_per_provider_s": {p: round(s, 2) for p, (_n, s) in duck_per.items()},
        }
        if not args.no_steps:
            steps = load_steps(archive, workdir, env)
            row["steps_s"] = {k: round(v, 2) for k, v in steps["steps"].items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        f"{'events':>10} {'load ev/s':>10} {'duckdb ev/s':>12} {'ratio':>6} "
        f"{'each run':>18} {'peak MiB':>9} {'all MiB':>8}"
    )
    for r in rows:
        each = "/".join(f"{x['ratio']:.2f}" for x in r["runs"])
        print(
            f"{r['events']:>10,} {r['load_events_per_s']:>10,} {r['duckdb_events_per_s']:>12,} "
            f"{r['ratio']:>6.2f} {each:>18} {r['load_peak_rss_mib']:>9,} "
            f"{r['load_peak_pss_sum_mib'] or '-':>8}"
        )
    print(
        "ratio = mailpulse load events/s / normalizing DuckDB SQL events/s, medians of the "
        "alternating runs (target >= 0.5); peak MiB = the load's largest process, all MiB = "
        "its processes summed (PSS: driver, zygote, workers); memory should not grow with "
        "the archive (target < 600 MiB)"
    )
    for r in rows:
        if "steps_s" not in r:
            continue
        total = sum(r["steps_s"].values()) or 1.0
        print(
            f"\nwhere the load's time goes, {r['events']:,} events (steps run one after "
            "another in one process):"
        )
        for k, v in sorted(r["steps_s"].items(), key=lambda kv: -kv[1]):
            print(
                f"  {k:<11} {v:7.2f} s  {100 * v / total:5.1f} %  "
                f"{r['events'] / v if v else 0:>12,.0f} events/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
