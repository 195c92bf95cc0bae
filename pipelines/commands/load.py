"""``mailpulse load``: archive files not loaded yet into the warehouse (a Beam job)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timezone

NAME = "load"
ORDER = 30
HELP = "load new raw provider archive files into the warehouse (Apache Beam)"
DESCRIPTION = """\
Reads the archive files not loaded yet (the loaded_files manifest says which were) from a
local path, gs:// or s3://, normalizes the records, removes duplicates by event_id (within
this load and against what is stored), keeps dead letters, and commits everything, with
the manifest, to the warehouse in one transaction. Loading the same files twice adds
nothing; a file that grew or was rewritten is read again.

Where to read:
  --archive URI        the mailpulse layout: <archive>/{sendgrid,ses,cmc}/YYYY/MM/DD/HH/*
  --source P=URI[?layout=hourly|firehose]   one provider's events (repeatable), e.g.
                       --source ses=s3://bucket/firehose?layout=firehose
  (neither: $MAILPULSE_SOURCES, else the default archive)
Which days: --date D (that day's new files), else the last --days N days (default 4).
--follow repeats the load every --interval seconds until SIGTERM.

Flags this command does not know are passed to Beam as pipeline options, e.g.
  --runner DataflowRunner --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py
  --s3_endpoint_url URL --s3_region_name R (S3 also takes the standard AWS_* variables)

Exit codes: 0 loaded (or nothing new), 1 counts do not add up, 2 usage error,
4 no archive file found at all (0 with --allow-empty).

Counts printed at the end add up:
  records_read = events_loaded + duplicates_in_batch + already_loaded
                 + dead_letters + records_without_event"""
ACCEPTS_EXTRA_ARGS = True
#: The ``mailpulse`` script leaves without the interpreter's teardown (cli.entry).
QUICK_EXIT = True

EXIT_EMPTY = 4
DEFAULT_INTERVAL = 30.0

log = logging.getLogger(__name__)


def add_source_options(p) -> None:
    """--archive / --source, shared by ``load`` and ``run``."""
    from ..config import default_archive

    p.add_argument(
        "--archive",
        default=None,
        metavar="URI",
        help="archive root in the mailpulse layout: a directory, gs://... or "
        f"s3://... (default: {default_archive()}, unless --source is given)",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PROVIDER=URI",
        help="one provider's archive: PROVIDER=URI[?layout=hourly|firehose] "
        "(repeatable; sendgrid, ses or cmc; firehose = Kinesis Firehose's "
        "default S3 keys). Default: $MAILPULSE_SOURCES",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="finding no archive file at all is not an error (exit 0, not 4)",
    )


def add_arguments(p):
    from ..config import default_warehouse_uri
    from ..settings import DEFAULT_DAYS
    from ._common import add_normalize_options, parse_date

    add_source_options(p)
    p.add_argument(
        "--date",
        default=None,
        type=parse_date,
        metavar="YYYY-MM-DD",
        help="load this archive day's new files (default: the last --days days)",
    )
    p.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"without --date: the last N archive days, ending today UTC (default: {DEFAULT_DAYS})",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="read every file again, loaded or not (repair; events still dedupe)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep loading new files every --interval seconds until SIGTERM",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"with --follow: seconds between loads (default: {DEFAULT_INTERVAL:g})",
    )
    p.add_argument(
        "--warehouse",
        default=None,
        metavar="URI",
        help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
        f"(default: {default_warehouse_uri()})",
    )
    p.add_argument(
        "--runner",
        default="DirectRunner",
        help="Beam runner (default: DirectRunner, run in-process; DataflowRunner at scale)",
    )
    p.add_argument(
        "--staging",
        default=None,
        metavar="URI",
        help="where staged Parquet files go before the commit (default: beside a "
        "DuckDB file, or <temp_location>/mailpulse-staging)",
    )
    p.add_argument(
        "--chunk-lines",
        type=int,
        default=None,
        metavar="N",
        help="records per pipeline element (default: 5000)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the counts as one JSON object on the last line"
    )
    add_normalize_options(p)


def run(args) -> int:
    import os

    from ..errors import UsageError
    from ..settings import Settings

    settings = Settings.from_args(args, os.environ)
    settings.check_local_sources()
    if args.follow and args.interval <= 0:
        raise UsageError("--interval must be a positive number of seconds")
    settings.check_storage()
    kwargs = dict(settings.load_kwargs(), full=args.full)
    warehouse = settings.warehouse
    if args.follow:
        return follow(args, warehouse, kwargs)
    from ..warehouse import TransientWarehouseError

    try:
        report = _load_once(
            warehouse, args.date, kwargs, progress=(not args.json) and sys.stderr.isatty()
        )
    except TransientWarehouseError as exc:  # the file stayed locked: say who holds it
        raise UsageError(f"{exc} Nothing was committed; rerun the load.") from None
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        print(format_report(report))
    if report.empty:
        print(f"mailpulse load: {report.message}", file=sys.stderr)
        return 0 if args.allow_empty else EXIT_EMPTY
    return 0 if report.adds_up() else 1


def _load_once(warehouse, day, kwargs, *, progress=False, record_idle=True):
    from ..errors import UsageError
    from ..load import run_load
    from ..storage import StorageError
    from ..warehouse import TransientWarehouseError, WarehouseError

    try:
        return run_load(None, day, warehouse, progress=progress, record_idle=record_idle, **kwargs)
    except TransientWarehouseError:
        raise
    except (WarehouseError, StorageError) as exc:
        raise UsageError(str(exc)) from None


def follow(args, warehouse, kwargs, *, stream=None, clock=time.time) -> int:
    """Incremental loads every ``--interval`` seconds until SIGTERM/SIGINT; the batch in
    progress finishes first. One line per batch: files, events, lag behind the newest file."""
    from ..warehouse import TransientWarehouseError

    stream = stream or sys.stdout
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    batches = 0
    try:
        while not stop.is_set():
            t0 = clock()
            try:
                report = _load_once(warehouse, args.date, kwargs, record_idle=False)
            except TransientWarehouseError as exc:
                print(f"{_now()} waiting: {exc}", file=stream, flush=True)
            else:
                batches += 1
                line = follow_line(report, now=datetime.now(timezone.utc))
                if args.json:
                    line = json.dumps(report.as_dict(), sort_keys=True)
                print(line, file=stream, flush=True)
                if not report.adds_up():
                    log.error(
                        "counts of load %s do not add up (please report a bug)", report.load_id
                    )
            stop.wait(max(0.0, args.interval - (clock() - t0)))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print(f"{_now()} stopped after {batches} batches", file=stream, flush=True)
    return 0


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def follow_line(report, now: datetime) -> str:
    t = report.totals
    lag = (
        f"{(now - report.newest_file_at).total_seconds():.0f} s" if report.newest_file_at else "n/a"
    )
    if report.status == "empty":
        what = "no archive files yet"
    elif report.files_read == 0:
        what = f"nothing new ({report.files_skipped} files already loaded)"
    else:
        what = (
            f"{report.files_read} files, {t['events_loaded']:,} new events, "
            f"{t['dead_letters']:,} dead letters, {t['already_loaded'] + t['duplicates_in_batch']:,} "
            f"duplicates in {report.seconds:.1f} s"
        )
    return f"{_now()} load {report.load_id}: {what}; newest file {lag} old"


def format_report(report) -> str:
    from ..warehouse import COUNTERS

    rows = [("provider", *COUNTERS)]
    for prov, counts in sorted(report.per_provider.items()):
        rows.append((prov, *(f"{counts.get(c, 0):,}" for c in COUNTERS)))
    rows.append(("total", *(f"{report.totals[c]:,}" for c in COUNTERS)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    days = (
        f"{report.archive_date}"
        if not report.first_date or report.first_date == report.archive_date
        else f"{report.first_date}..{report.archive_date}"
    )
    lines = [
        f"load {report.load_id}: {report.archive} {days} -> {report.warehouse}",
        f"{report.files_read} files read, {report.files_skipped} already loaded, in "
        f"{report.seconds:.1f} s "
        f"({report.totals['records_read'] / max(report.seconds, 1e-9):,.0f} records/s, "
        f"runner {report.runner})",
        "",
    ]
    for r in rows:
        lines.append(
            "  ".join(
                str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths))
            )
        )
    lines.append("")
    lines.append(
        "counts add up: records_read = events_loaded + duplicates_in_batch + "
        "already_loaded + dead_letters + records_without_event"
        if report.adds_up()
        else "WARNING: counts do not add up (please report a bug)"
    )
    return "\n".join(lines)
