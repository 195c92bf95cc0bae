"""``mailpulse run``: the main job on one machine: load a day, recompute outcomes, show them."""

from __future__ import annotations

import json
import logging
import sys

NAME = "run"
ORDER = 5
HELP = "the main job: load one day's archive, recompute outcomes, print them"
DESCRIPTION = """\
Loads one day of the archive into the warehouse (the Beam load job), recomputes the
derived tables over the look-back window ending that day, and prints the per-category
outcomes. On the embedded default (a DuckDB file and an archive under
$MAILPULSE_DATA_DIR, default ./mailpulse-data) an archive with no files at all is first
filled with a synthetic sample day (`mailpulse synth`), so a fresh machine shows
something real. Running it again adds nothing: loads are idempotent."""
ACCEPTS_EXTRA_ARGS = True

log = logging.getLogger(__name__)


def add_arguments(p):
    from ._common import add_normalize_options, parse_date
    from .load import add_source_options

    p.add_argument(
        "--date",
        type=parse_date,
        default=None,
        metavar="YYYY-MM-DD",
        help="the day to load (default: yesterday, UTC, a complete day)",
    )
    add_source_options(p)
    p.add_argument(
        "--warehouse",
        default=None,
        metavar="URI",
        help="warehouse URI (default: $MAILPULSE_DATA_DIR/warehouse.duckdb)",
    )
    p.add_argument("--runner", default="DirectRunner", help="Beam runner (default: DirectRunner)")
    p.add_argument(
        "--sample-messages",
        type=int,
        default=20_000,
        metavar="N",
        help="messages in the generated sample day when the archive is empty (default: 20000)",
    )
    p.add_argument(
        "--no-sample",
        action="store_true",
        help="never generate sample data, even when the archive is empty",
    )
    p.add_argument(
        "--window-days",
        type=int,
        default=None,
        metavar="N",
        help="outcome partitions recomputed, ending at --date (default: 4)",
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table (default) or json: one JSON object {load, outcomes} last",
    )
    add_normalize_options(p)


def run(args) -> int:
    import os
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    from ..errors import UsageError
    from ..load import run_load
    from ..outcomes import (
        WINDOW_DAYS,
        compute_outcomes,
        late_status_partitions,
        read_outcomes,
        window_ending,
    )
    from ..settings import Settings
    from ..storage import StorageError
    from ..warehouse import WarehouseError
    from ._output import rows_for_json
    from .load import EXIT_EMPTY, format_report
    from .outcomes import print_outcomes

    settings = Settings.from_args(args, os.environ)
    day = args.date or (datetime.now(timezone.utc).date() - timedelta(days=1))
    archive = settings.archive or settings.default_archive
    warehouse = settings.warehouse
    out = sys.stdout if args.format == "table" else sys.stderr

    if (
        not settings.explicit_sources
        and "://" not in archive
        and not args.no_sample
        and not _has_files(Path(archive))
    ):
        from ..synth import generate

        print(
            f"{archive} holds no archive files: generating a sample day {day} "
            f"({args.sample_messages:,} messages, all three providers) ...",
            file=out,
        )
        summary = generate(archive, day, messages=args.sample_messages, seed=1)
        print(
            f"  wrote {summary.files:,} files, {sum(summary.events_by_provider.values()):,} events",
            file=out,
        )
    settings.check_local_sources()
    settings.check_storage()

    try:
        report = run_load(
            None,
            day,
            warehouse,
            **settings.load_kwargs(),
            progress=args.format == "table" and sys.stderr.isatty(),
        )
        print(format_report(report), file=out)
        if report.empty and not args.allow_empty:
            print(f"mailpulse run: {report.message}", file=sys.stderr)
            return EXIT_EMPTY
        start, _ = window_ending(day, settings.window_days or WINDOW_DAYS)
        written = compute_outcomes(
            warehouse, start, day, status_partitions=late_status_partitions(warehouse, start, day)
        )
        df = read_outcomes(warehouse, start, day)
    except (WarehouseError, StorageError) as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        print(json.dumps({"load": report.as_dict(), "outcomes": rows_for_json(df)}))
    else:
        print(file=out)
        print_outcomes(df, start, day, "table", out, written=written, source=str(warehouse))
    return 0 if report.adds_up() else 1


def _has_files(root) -> bool:
    return root.is_dir() and any(p.is_file() for p in root.rglob("*.json*"))
