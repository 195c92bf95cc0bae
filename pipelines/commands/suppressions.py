"""``mailpulse suppressions``: clean a list before sending (pipelines/suppress.py)."""

from __future__ import annotations

import sys

NAME = "suppressions"
ORDER = 47
HELP = "clean a list before sending: the addresses to keep, and those to drop with why and when"
DESCRIPTION = """\
Reads your list (--emails FILE: one address per line, or a CSV with an email column;
- for stdin), hashes each address here with MAILPULSE_HASH_KEY (the key the loads used)
and looks the hashes up in the suppressions table: hard bounces, complaints (spam
reports), unsubscribes, repeated soft bounces, invalid addresses. Only hashes go to the
warehouse; the addresses printed or written are those of your file.

Without --out it prints the addresses to drop, with the reason and when. With --out
CLEAN.csv it writes the rows to keep there (your file's rows and columns, header kept,
repeated addresses once) and the addresses to drop, with reason, first_seen and
last_seen, to --dropped (default: CLEAN.dropped.csv). The answer is as fresh as the
last `mailpulse outcomes` run over the loaded days."""

#: Column names that hold the address in a CSV with a header (compared lower-cased).
EMAIL_COLUMNS = (
    "email",
    "e-mail",
    "email_address",
    "emailaddress",
    "email address",
    "mail",
    "address",
    "recipient",
    "to",
)


def add_arguments(p):
    from ._common import parse_date

    p.add_argument(
        "--emails",
        required=True,
        metavar="FILE",
        help="your list: one address per line, or CSV with an email column (- reads stdin)",
    )
    p.add_argument(
        "--out",
        metavar="CLEAN.csv",
        default=None,
        help="write the rows to keep here (and the dropped ones to --dropped)",
    )
    p.add_argument(
        "--dropped",
        metavar="FILE",
        default=None,
        help="where the addresses to drop go with --out (default: CLEAN.dropped.csv beside --out)",
    )
    p.add_argument(
        "--column",
        metavar="NAME",
        default=None,
        help="the CSV column holding the addresses (default: email, address, ...)",
    )
    p.add_argument(
        "--since",
        type=parse_date,
        metavar="YYYY-MM-DD",
        default=None,
        help="only suppressions that qualified since this day (default: all)",
    )
    p.add_argument(
        "--warehouse",
        metavar="URI",
        default=None,
        help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
        "(default: the embedded warehouse under $MAILPULSE_DATA_DIR)",
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )


class ListFile:
    """A user's list: its rows, the header (or None) and the address column."""

    def __init__(
        self, rows: list[list[str]], header: list[str] | None, column: int, delimiter: str | None
    ):
        self.rows, self.header, self.column, self.delimiter = rows, header, column, delimiter

    def addresses(self) -> list[str]:
        return [r[self.column] if self.column < len(r) else "" for r in self.rows]


def read_list(text: str, name: str, column: str | None = None) -> ListFile:
    """Parse a list file; errors (UsageError) say how to fix it."""
    import csv

    from ..errors import UsageError
    from ..suppress import is_address

    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(
            f"{name} holds no addresses; give a file with one address per line "
            "or a CSV with an email column"
        )
    first = lines[0]
    delimiter = next((d for d in (",", "\t", ";") if d in first), None)
    if delimiter is None and column is None:  # one address per line (an "email" header ok)
        header = [first.strip()] if first.strip().lower() in EMAIL_COLUMNS else None
        rows = [[line.strip()] for line in (lines[1:] if header else lines)]
        return ListFile(rows, header, 0, None)
    rows = list(csv.reader(lines, delimiter=delimiter or ","))
    head = [c.strip().lower() for c in rows[0]]
    if column is not None:
        if column.strip().lower() not in head:
            raise UsageError(
                f"{name} has no column {column!r} in its first row "
                f"({', '.join(rows[0])}); name one of those with --column"
            )
        return ListFile(rows[1:], rows[0], head.index(column.strip().lower()), delimiter)
    named = [i for i, c in enumerate(head) if c in EMAIL_COLUMNS]
    if named:
        return ListFile(rows[1:], rows[0], named[0], delimiter)
    looks = [i for i, c in enumerate(rows[0]) if is_address(c)]
    if len(looks) == 1:  # no header: the one column that holds an address
        return ListFile(rows, None, looks[0], delimiter)
    raise UsageError(
        f"{name}: cannot tell which column holds the addresses (first row: "
        f"{', '.join(rows[0])}); name it with --column NAME"
    )


def _ts(v) -> str:
    from ..events import rfc3339

    return rfc3339(v) if v is not None else ""


def run(args) -> int:
    import csv
    import json
    import os
    from pathlib import Path

    from ..errors import UsageError
    from ..suppress import REASON_TEXT, clean_list
    from ..warehouse import WarehouseError
    from ._common import read_input, warehouse_and_hasher

    text, name = read_input(
        args.emails,
        f"--emails {args.emails}",
        "give the path of your list (one address per line, or a CSV with an email column)",
    )
    listed = read_list(text, name, args.column)
    target, hasher = warehouse_and_hasher(args)
    try:
        result = clean_list(listed.addresses(), warehouse=target, since=args.since, hasher=hasher)
    except (WarehouseError, ValueError) as exc:
        raise UsageError(str(exc)) from None

    written = {}
    if args.out:
        out_path = Path(args.out)
        dropped_path = (
            Path(args.dropped)
            if args.dropped
            else out_path.with_name(out_path.stem + ".dropped" + (out_path.suffix or ".csv"))
        )
        for flag, path in (("--out", out_path), ("--dropped", dropped_path)):
            folder = path.parent if str(path.parent) else Path(".")
            if not folder.is_dir() or not os.access(folder, os.W_OK) or path.is_dir():
                raise UsageError(
                    f"cannot write {flag} {path}: {folder} is not a writable folder"
                    + (" (it is a folder)" if path.is_dir() else "")
                    + "; pick a file in a folder you can write to"
                )
        keep = set(result.keep)
        done: set[str] = set()
        with out_path.open("w", encoding="utf-8", newline="") as f:
            if listed.delimiter is None:  # the list's own shape: one address per line
                if listed.header:
                    f.write(listed.header[0] + "\n")
                for row, a in zip(listed.rows, listed.addresses()):
                    if a in keep and a not in done:
                        done.add(a)
                        f.write(row[0] + "\n")
            else:
                w = csv.writer(f, delimiter=listed.delimiter, lineterminator="\n")
                if listed.header:
                    w.writerow(listed.header)
                for row, a in zip(listed.rows, listed.addresses()):
                    if a in keep and a not in done:
                        done.add(a)
                        w.writerow(row)
        with dropped_path.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["email", "reason", "reasons", "first_seen", "last_seen"])
            for d in result.drop:
                w.writerow(
                    [d.email, d.reason, " ".join(d.reasons), _ts(d.first_seen), _ts(d.last_seen)]
                )
        written = {"out": str(out_path), "dropped_file": str(dropped_path)}

    summary = {
        "checked": len(result.keep) + len(result.drop) + result.duplicates,
        "keep": len(result.keep),
        "drop": len(result.drop),
        "duplicates": result.duplicates,
        "by_reason": result.by_reason(),
        "suppressions_through": (
            result.suppressions_through.isoformat() if result.suppressions_through else None
        ),
        **written,
    }
    out = sys.stdout
    if args.format == "json":
        summary["dropped"] = [
            {
                "email": d.email,
                "reason": d.reason,
                "reasons": list(d.reasons),
                "first_seen": _ts(d.first_seen) or None,
                "last_seen": _ts(d.last_seen) or None,
            }
            for d in result.drop
        ]
        out.write(json.dumps(summary) + "\n")
        return 0
    reasons = ", ".join(f"{n} {REASON_TEXT.get(r, r)}" for r, n in summary["by_reason"].items())
    out.write(
        f"{name}: {summary['checked']} addresses, {summary['keep']} to keep, "
        f"{summary['drop']} to drop"
        + (f" ({reasons})" if reasons else "")
        + (f", {result.duplicates} repeated" if result.duplicates else "")
        + (
            f"; suppressions through {summary['suppressions_through']}"
            if summary["suppressions_through"]
            else ""
        )
        + "\n"
    )
    if written:
        out.write(
            f"wrote the {summary['keep']} to keep to {written['out']} and the "
            f"{summary['drop']} to drop to {written['dropped_file']}\n"
        )
    elif result.drop:
        width = max(len(d.email) for d in result.drop)
        why = max(len(d.description) for d in result.drop)
        when = max(len("latest"), *(len(_ts(d.last_seen)) for d in result.drop))
        out.write(f"{'drop':<{width}}  {'reason':<{why}}  {'latest':<{when}}  first\n")
        for d in result.drop:
            out.write(
                f"{d.email:<{width}}  {d.description:<{why}}  "
                f"{_ts(d.last_seen):<{when}}  {_ts(d.first_seen)}".rstrip()
                + "\n"
            )
    return 0
