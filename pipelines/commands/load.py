"""``mailpulse load``: one archive day into the warehouse (a Beam job)."""
from __future__ import annotations

import json
import sys

NAME = "load"
ORDER = 30
HELP = "load one day of raw provider archives into the warehouse (Apache Beam)"
DESCRIPTION = """\
Reads every archive file of one day (<archive>/<provider>/YYYY/MM/DD/*/*.json[.gz]) from a
local path, gs:// or s3://, normalizes the records, removes duplicates by event_id (within
this load and against what is stored), keeps dead letters, and commits everything to the
warehouse in one transaction. Loading the same day twice adds nothing.

Flags this command does not know are passed to Beam as pipeline options, e.g.
  --runner DataflowRunner --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py

Counts printed at the end add up:
  records_read = events_loaded + duplicates_in_batch + already_loaded
                 + dead_letters + records_without_event"""
ACCEPTS_EXTRA_ARGS = True


def add_arguments(p):
    from ..config import default_archive, default_warehouse_uri
    from ._common import add_normalize_options, parse_date
    p.add_argument("--archive", default=None, metavar="URI",
                   help=f"archive root: a directory, gs://... or s3://... (default: {default_archive()})")
    p.add_argument("--date", required=True, type=parse_date, metavar="YYYY-MM-DD",
                   help="the archive day to load (UTC)")
    p.add_argument("--warehouse", default=None, metavar="URI",
                   help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
                        f"(default: {default_warehouse_uri()})")
    p.add_argument("--runner", default="DirectRunner",
                   help="Beam runner (default: DirectRunner, run in-process; DataflowRunner at scale)")
    p.add_argument("--staging", default=None, metavar="URI",
                   help="where staged Parquet files go before the commit (default: beside a "
                        "DuckDB file, or <temp_location>/mailpulse-staging)")
    p.add_argument("--chunk-lines", type=int, default=None, metavar="N",
                   help="records per pipeline element (default: 5000)")
    p.add_argument("--json", action="store_true",
                   help="print the counts as one JSON object on the last line")
    add_normalize_options(p)


def run(args) -> int:
    from ..cli import UsageError
    from ..config import default_archive, default_warehouse_uri
    from ..load import DEFAULT_CHUNK_LINES, NormalizeConfig, run_load
    from ..warehouse import WarehouseError
    from ._common import context_from_args, hasher_from_env

    warehouse = args.warehouse or default_warehouse_uri()
    archive = args.archive or default_archive()
    embedded = warehouse.startswith("duckdb:")
    hasher = hasher_from_env(embedded=embedded)
    context_from_args(args, hasher)  # validates --cmc-timezone early
    if args.chunk_lines is not None and args.chunk_lines < 1:
        raise UsageError("--chunk-lines must be a positive number")
    if "://" not in archive and not _exists(archive):
        raise UsageError(f"archive {archive} does not exist; pass --archive DIR "
                         "(or create sample data with `mailpulse synth --out DIR`)")
    config = NormalizeConfig(hasher=hasher, ses_category_tag=args.ses_category_tag,
                             cmc_timezone=args.cmc_timezone,
                             cmc_category_field=args.cmc_category_field,
                             max_record_bytes=args.max_record_bytes)
    try:
        report = run_load(archive, args.date, warehouse, config=config, runner=args.runner,
                          staging=args.staging, beam_args=args.extra,
                          chunk_lines=args.chunk_lines or DEFAULT_CHUNK_LINES,
                          progress=(not args.json) and sys.stderr.isatty())
    except WarehouseError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        print(format_report(report))
    return 0 if report.adds_up() else 1


def _exists(path: str) -> bool:
    import os
    return os.path.isdir(path)


def format_report(report) -> str:
    from ..warehouse import COUNTERS
    rows = [("provider", *COUNTERS)]
    for prov, counts in sorted(report.per_provider.items()):
        rows.append((prov, *(f"{counts.get(c, 0):,}" for c in COUNTERS)))
    rows.append(("total", *(f"{report.totals[c]:,}" for c in COUNTERS)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [f"load {report.load_id}: {report.archive} {report.archive_date} -> {report.warehouse}",
             f"{report.files_read} files in {report.seconds:.1f} s "
             f"({report.totals['records_read'] / max(report.seconds, 1e-9):,.0f} records/s, "
             f"runner {report.runner})", ""]
    for r in rows:
        lines.append("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    lines.append("")
    lines.append("counts add up: records_read = events_loaded + duplicates_in_batch + "
                 "already_loaded + dead_letters + records_without_event"
                 if report.adds_up() else "WARNING: counts do not add up (please report a bug)")
    return "\n".join(lines)
