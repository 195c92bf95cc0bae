"""``mailpulse outcomes``: print the per-category delivery outcomes of a date range;
with ``--recompute``, first recompute the derived tables for it."""

from __future__ import annotations

import sys

# the percentages (and the JSON/CSV rows, commands/_output.py) are shared with
# `mailpulse run` and the send view (commands/sends.py)
from ._output import bounced_cell
from ._output import pct as _pct

NAME = "outcomes"
ORDER = 40
HELP = "print delivery outcomes per category (--recompute: recompute the derived tables first)"
DESCRIPTION = """\
Prints the delivery outcomes of [--start, --end] as they are in the warehouse: it only
reads, so a read-only user (a BigQuery viewer) can look. --recompute first recomputes
the partitions of delivery_outcomes (and domain_outcomes, the same per recipient
domain), recipient_status and suppressions for the range from the loaded events, all in
one transaction (idempotent: a rerun changes nothing); the daily DAG and `mailpulse run`
do that on their own.

Default range: the --window-days days (4) ending at the latest day that has data (the
latest event_date of delivery_outcomes, or of events with --recompute), not today: old
data shows as itself, not as zeros.

--format table (default) prints one line per category, dates and providers summed;
json prints a JSON array of rows (event_date, category, provider and every metric);
csv prints the same rows as CSV. A message with several categories counts in each.
Rates say what they divide by: delivered % = delivered / requests, bounce % = bounces /
requests (blocks excluded, as in SendGrid), open and click rates divide by delivered.

--by day|category|provider|mailbox sums along one dimension instead (every format):
provider is the sending provider (sendgrid, ses, cmc); mailbox the recipients' mailbox
provider (Gmail, Microsoft, Yahoo, Yahoo! JAPAN, Apple, docomo, au, SoftBank, other),
from the recipient domains (pipelines/data/mailbox_providers.csv). --category NAME
keeps one category (e.g. a campaign: --by mailbox --category spring-sale).

--by send (or --send-id ID) shows the send log instead (pipelines/sends.py): per send,
recipients sent (in the log), reported (any provider event from their send time to 4
days after), never reported (sent, no event at all), and how the sent recipients ended
(each once, at its most final status, as `mailpulse watch`). The range is of send dates
(default: --window-days ending at the latest send); --send-id ID shows that send,
whatever its dates, in total or --by mailbox. --recipients lists who did not get it
(never reported, bounced, dropped, deferred, accepted only) by hash; --emails FILE (your
list) names them by address, hashed locally. Reads only."""


def add_arguments(p):
    from ._common import parse_date

    p.add_argument(
        "--warehouse",
        metavar="URI",
        default=None,
        help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
        "(default: the embedded warehouse under $MAILPULSE_DATA_DIR)",
    )
    p.add_argument(
        "--start",
        type=parse_date,
        metavar="YYYY-MM-DD",
        help="first event date (default: --window-days days ending at --end)",
    )
    p.add_argument(
        "--end",
        type=parse_date,
        metavar="YYYY-MM-DD",
        help="last event date (default: the latest day with data)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="recompute the derived tables for the range first (needs write "
        "access; the daily DAG and `mailpulse run` recompute on their own)",
    )
    p.add_argument(
        "--window-days",
        type=int,
        default=None,
        metavar="N",
        help="days in the window when --start is not given, ending at --end "
        "(default: 4, so mail that settles within 72 h lands; the DAGs and "
        "`mailpulse run` use the same setting)",
    )
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default: table)",
    )
    p.add_argument(
        "--by",
        choices=("day", "category", "provider", "mailbox", "send"),
        default=None,
        help="sum along one dimension (default: per category; json/csv: every row); "
        "send: per send of the send log, with never-reported recipients",
    )
    p.add_argument(
        "--send-id",
        default=None,
        metavar="ID",
        help="one send of the send log: sent, reported, never reported (with --by mailbox: "
        "per mailbox provider)",
    )
    p.add_argument(
        "--recipients",
        action="store_true",
        help="with --send-id: list the recipients that did not get it (by hash)",
    )
    p.add_argument(
        "--emails",
        default=None,
        metavar="FILE",
        help="with --recipients: your list (one address per line or a CSV with an email "
        "column), hashed locally to name those recipients by address",
    )
    p.add_argument(
        "--category", default=None, metavar="NAME", help="only this category (e.g. one campaign)"
    )
    p.add_argument(
        "--soft-bounce-threshold",
        type=int,
        default=None,
        metavar="N",
        help="suppress a recipient after N soft-bounced messages (default: 3)",
    )
    p.add_argument(
        "--soft-bounce-days",
        type=int,
        default=None,
        metavar="D",
        help="... within D days (default: 7)",
    )


def resolve_range(start, end, today=None, window_days=None):
    """--start/--end with the defaults filled in: the ``window_days`` (default 4) days
    ending at end, end = today (UTC)."""
    from ..errors import UsageError
    from ..outcomes import WINDOW_DAYS, default_range, window_ending

    window_days = WINDOW_DAYS if window_days is None else window_days
    if window_days < 1:
        raise UsageError(f"--window-days must be at least 1, got {window_days}")
    if end is None:
        end = default_range(today)[1]
    if start is None:
        start = window_ending(end, window_days)[0]
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}; swap them")
    return start, end


def latest_day(wh, table: str):
    """The latest event_date in ``table`` (None when it is missing or empty)."""
    if not wh.table_exists(table):
        return None
    # a bounded scan: partitions from 10 years back (BigQuery needs a partition filter)
    from datetime import date, timedelta

    rows = wh.query(
        f"SELECT MAX(event_date) AS hi FROM {table} WHERE event_date >= @since",
        {"since": date.today() - timedelta(days=3650)},
    )
    return rows.to_pylist()[0]["hi"]


def run(args) -> int:
    import os

    from ..errors import UsageError
    from ..outcomes import compute_outcomes, read_outcomes
    from ..settings import Settings
    from ..warehouse import WarehouseError, open_warehouse

    if getattr(args, "by", None) == "send" or getattr(args, "send_id", None) is not None:
        from .sends import run_send_view

        return run_send_view(args)
    for flag in ("recipients", "emails"):
        if getattr(args, flag, None):
            raise UsageError(f"--{flag} lists the recipients of one send: add --send-id ID")
    settings = Settings.from_args(args, os.environ)
    params = {}
    for flag, name in (
        ("soft_bounce_threshold", "soft_bounce_threshold"),
        ("soft_bounce_days", "soft_bounce_days"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
            if not args.recompute:
                raise UsageError(
                    f"--{flag.replace('_', '-')} changes how suppressions are "
                    "computed: add --recompute"
                )
            params[name] = value
    recompute = bool(getattr(args, "recompute", False))
    if args.start is not None and args.end is not None and args.end < args.start:
        raise UsageError(f"--end {args.end} is before --start {args.start}; swap them")
    written = None
    try:
        wh = open_warehouse(settings.warehouse)
        if not wh.table_exists("events"):
            raise UsageError(
                f"no events in {wh.uri or settings.warehouse}; run `mailpulse load` "
                "first, or point --warehouse at a loaded warehouse"
            )
        if not recompute and not wh.table_exists("delivery_outcomes"):
            raise UsageError(
                f"delivery_outcomes does not exist in {wh.uri}: nothing computed yet; run "
                "`mailpulse outcomes --recompute` (needs write access) or `mailpulse run`"
            )
        end = args.end
        if end is None and args.start is None:
            end = latest_day(wh, "events" if recompute else "delivery_outcomes")
        elif end is None:
            end = max(
                latest_day(wh, "events" if recompute else "delivery_outcomes") or args.start,
                args.start,
            )
        start, end = resolve_range(args.start, end, window_days=settings.window_days)
        if recompute:
            written = compute_outcomes(wh, start, end, **params)
        by = getattr(args, "by", None)
        category = getattr(args, "category", None)
        if by == "mailbox":
            from ..breakdown import read_domain_outcomes

            df = read_domain_outcomes(wh, start, end, category=category)
        else:
            df = read_outcomes(wh, start, end)
            if category is not None:
                df = df[df["category"] == category].reset_index(drop=True)
    except WarehouseError as exc:
        raise UsageError(str(exc)) from None
    print_outcomes(df, start, end, args.format, sys.stdout, written=written, source=wh.uri, by=by)
    return 0


# -- output -----------------------------------------------------------------------------
#: --by -> the first column's title in the table
_BY_TITLE = {
    "day": "day",
    "category": "category",
    "provider": "provider",
    "mailbox": "mailbox provider",
}


def format_table(df, start, end, source: str = "", by: str | None = None) -> str:
    """One line per category (or per value of ``by``): what a person reads at a glance."""
    from ..breakdown import BY_COLUMN, summarize_by

    by = by or "category"
    head = f"Delivery outcomes {start} .. {end}" + (f"  ({source})" if source else "")
    if by != "category":
        head += f", by {_BY_TITLE[by]}"
    if df.empty:
        return head + "\nno outcomes in this range (no events loaded for these dates?)\n"
    s = summarize_by(df, by)
    key = BY_COLUMN[by]
    cols = [
        _BY_TITLE[by],
        "providers",
        "requests",
        "delivered",
        "deliv %",
        "bounce %",
        "bounced (h/s/b/u)",
        "deferred",
        "dropped",
        "opens (uniq)",
        "clicks (uniq)",
        "spam",
        "unsub",
    ]
    lines = []
    for r in s.to_dict(orient="records"):
        name = r[key].isoformat() if hasattr(r[key], "isoformat") else str(r[key])
        lines.append(
            [
                name,
                r["providers"],
                str(r["requests"]),
                str(r["delivered"]),
                _pct(r["delivered_rate"]),
                _pct(r["bounce_rate"]),
                bounced_cell(r),
                str(r["deferred"]),
                str(r["drops"]),
                f"{r['opens']} ({r['unique_opens']})",
                f"{r['clicks']} ({r['unique_clicks']})",
                str(r["spam_reports"]),
                str(r["unsubscribes"]),
            ]
        )
    if by == "provider":  # the providers column would repeat the first
        cols.pop(1)
        lines = [line[:1] + line[2:] for line in lines]
    texts = 1 if by == "provider" else 2  # left-aligned text columns
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i < texts else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    body = [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    notes = (
        "requests = recipients sent to; deliv % = delivered / requests; bounce % = "
        "bounces / requests (blocks excluded, as SendGrid);\nbounced = "
        "SendGrid's bounces + blocks, split hard/soft/block/undetermined;\nunique opens/clicks are summed per day; a message "
        "with several categories counts in each (--format json for every metric)."
    )
    return "\n".join([head, *body, "", notes]) + "\n"


def print_outcomes(
    df,
    start,
    end,
    fmt: str,
    out=None,
    *,
    written: dict | None = None,
    source: str = "",
    by: str | None = None,
) -> None:
    """Print outcomes rows as ``table``, ``csv`` or ``json`` (also used by `mailpulse run`).
    With ``by``, json and csv print the rows summed along it (pipelines/breakdown.py)."""
    from ._output import write_rows

    out = out or sys.stdout
    if by is not None and fmt != "table":
        from ..breakdown import summarize_by

        df = summarize_by(df, by)
    if not write_rows(df, fmt, out):
        out.write(format_table(df, start, end, source, by=by))
        if written:
            out.write(
                "recomputed: " + ", ".join(f"{t} {n} rows" for t, n in written.items()) + "\n"
            )
    out.flush()
