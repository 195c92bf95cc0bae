"""``mailpulse synth``: write a deterministic synthetic provider archive (and its truth)."""

from __future__ import annotations

import argparse
import sys

NAME = "synth"
ORDER = 20
HELP = "write a deterministic synthetic SendGrid / SES / CMC archive for demos, tests, benchmarks"
DESCRIPTION = """\
Writes DIR/<provider>/YYYY/MM/DD/HH/*.json.gz for SendGrid, Amazon SES and Customers
Mail Cloud in each provider's native format: per-recipient lifecycles (processed,
deferred, delivered / bounce / dropped, opens, clicks, spam reports, unsubscribes),
categories and recipient domains of different health, SendGrid retries, late events,
optional corrupt records. Same arguments give byte-identical files.

--truth FILE writes the ground truth (per category counts, per recipient final status,
plain recipient addresses) as JSON; keep it outside the archive directory. CMC carries
the category in apiData: read it with --cmc-category-field apiData."""


def _rate(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number; give a rate between 0 and 1, e.g. 0.05"
        ) from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{value} is not between 0 and 1; give a rate such as 0.05"
        )
    return v


def _positive(value: str) -> int:
    try:
        v = int(value.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number, e.g. 10000") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return v


def add_arguments(p):
    from ..synth import SynthConfig
    from ._common import parse_date

    d = SynthConfig.__dataclass_fields__
    p.add_argument("--out", required=True, metavar="DIR", help="archive directory to write into")
    p.add_argument(
        "--date",
        required=True,
        type=parse_date,
        metavar="YYYY-MM-DD",
        help="the UTC date the mail is sent on",
    )
    p.add_argument(
        "--messages",
        type=_positive,
        default=d["messages"].default,
        metavar="N",
        help="messages to send (SES/SendGrid messages can have several recipients; "
        "about 2.8 events per message) (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d["seed"].default,
        metavar="S",
        help="random seed (default: %(default)s)",
    )
    p.add_argument(
        "--providers",
        default="sendgrid,ses,cmc",
        metavar="LIST",
        help="comma-separated subset of sendgrid,ses,cmc (default: all three)",
    )
    p.add_argument(
        "--categories",
        type=_positive,
        default=d["categories"].default,
        metavar="K",
        help="number of categories, 1-99 (default: %(default)s: newsletter, "
        "reengagement (the unhealthy one), transactional, promo, onboarding)",
    )
    g = p.add_argument_group("rates (probabilities between 0 and 1)")
    for name, helptext in (
        ("bounce_rate", "base P(bounce) per recipient, scaled per category and domain"),
        ("drop_rate", "base P(dropped) per recipient"),
        ("defer_rate", "base P(deferred at least once), scaled per domain"),
        ("corrupt_rate", "P(an extra corrupt record after a record); each becomes one dead letter"),
        ("retry_rate", "P(a SendGrid post is posted again / an SES record written twice)"),
        ("late_rate", "P(an event of --date arrives in the next day's directories)"),
        ("sns_rate", "P(an SES record comes inside an SNS envelope)"),
    ):
        g.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_rate,
            default=d[name].default,
            metavar="P",
            help=f"{helptext} (default: %(default)s)",
        )
    p.add_argument(
        "--events-per-file",
        type=_positive,
        default=d["events_per_file"].default,
        metavar="N",
        help="at most N events per archive file (default: %(default)s)",
    )
    p.add_argument(
        "--compresslevel",
        type=int,
        default=d["compresslevel"].default,
        choices=range(0, 10),
        metavar="0-9",
        help="gzip level (default: %(default)s)",
    )
    p.add_argument(
        "--truth",
        metavar="FILE",
        default=None,
        help="write the ground truth as JSON to FILE (outside --out)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synth archive of the same date in --out "
        "(other files are left alone)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on the last line"
    )


def run(args) -> int:
    from pathlib import Path

    import orjson

    from ..errors import UsageError
    from ..synth import SynthConfig, generate

    out = Path(args.out)
    truth_path = Path(args.truth) if args.truth else None
    if truth_path is not None:
        try:
            truth_path.resolve().relative_to(out.resolve())
        except ValueError:
            pass
        else:
            raise UsageError(
                f"--truth {args.truth} is inside --out {args.out}, where the load "
                "job would read it as archive data; write it elsewhere, e.g. "
                f"--truth {out.name}-truth.json"
            )
        if truth_path.is_dir():
            raise UsageError(
                f"--truth {args.truth} is a directory; give a file name such as "
                f"{truth_path / 'truth.json'}"
            )
    config = SynthConfig(
        out=out,
        date=args.date,
        messages=args.messages,
        seed=args.seed,
        providers=args.providers,
        categories=args.categories,
        bounce_rate=args.bounce_rate,
        drop_rate=args.drop_rate,
        defer_rate=args.defer_rate,
        corrupt_rate=args.corrupt_rate,
        retry_rate=args.retry_rate,
        late_rate=args.late_rate,
        sns_rate=args.sns_rate,
        events_per_file=args.events_per_file,
        compresslevel=args.compresslevel,
        overwrite=args.overwrite,
    )
    try:
        summary = generate(config=config)
    except ValueError as exc:  # bad options, or an archive of that date is already there
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(
            f"cannot write to {args.out}: {exc.strerror or exc}; check the path and free space"
        ) from None
    result = summary.as_dict()
    if truth_path is not None:
        try:
            summary.truth.write_json(truth_path)
        except OSError as exc:
            raise UsageError(f"cannot write --truth {args.truth}: {exc.strerror or exc}") from None
        result["truth"] = str(truth_path)
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    print(_human(result, summary))
    return 0


def _human(r: dict, summary) -> str:
    lines = [
        f"synth {r['date']} seed {r['seed']}: {r['messages']:,} messages to "
        f"{r['recipients']:,} recipients -> {r['out']}",
        f"  {r['events_written']:,} events in {r['files']:,} files "
        f"({r['bytes_written'] / 1e6:.1f} MB gzip) in {r['elapsed_s']:.1f} s "
        f"= {r['events_per_s']:,} events/s",
    ]
    for p, n in r["events_by_provider"].items():
        lines.append(
            f"  {p:<9} {n:>10,} events  {r['files_by_provider'][p]:>5,} files  "
            f"{r['records_by_provider'][p]:>9,} records"
        )
    lines.append(
        f"  retried SendGrid posts {r['retried_posts']:,}, duplicated SES records "
        f"{r['duplicated_records']:,}, late events {r['late_events']:,}, "
        f"corrupt records {r['corrupt_records']:,}"
    )
    cats = summary.truth.categories
    lines.append("  category          requests  delivered  bounces  dropped  opens")
    for name, m in cats.items():
        lines.append(
            f"  {name:<16} {m['requests']:>9,} {m['delivered']:>10,} "
            f"{m['bounces']:>8,} {m['dropped']:>8,} {m['opens']:>6,}"
        )
    if "truth" in r:
        lines.append(f"  ground truth: {r['truth']}")
    return "\n".join(lines)
