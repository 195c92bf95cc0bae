"""``mailpulse sends import FILE``: add what you sent to the send log (pipelines/sends.py)."""

from __future__ import annotations

import sys

from ._output import bounced_cell
from ._output import pct as _pct

NAME = "sends"
ORDER = 55
HELP = "the send log: `sends import FILE` records what was sent (recipient, message id, time)"
DESCRIPTION = """\
The send log (table `sends`) records what you sent, so the provider's events can be
matched to it. `mailpulse sends import FILE` reads a CSV with a header (an `email`
column; optional message_id, send_id, category, provider, sent_at) or JSON lines with
the same keys (- reads stdin). Addresses are hashed here with MAILPULSE_HASH_KEY; only
hashes are stored. --send-id, --category, --provider and --sent-at fill what a row leaves
out (sent_at defaults to now; a time without an offset is UTC). Importing the same file
again adds nothing: a (send_id, recipient, message_id) is recorded once."""

#: header name (lower-cased) -> record key
COLUMN_ALIASES = {
    "email": "email",
    "e-mail": "email",
    "email_address": "email",
    "address": "email",
    "recipient": "email",
    "to": "email",
    "message_id": "message_id",
    "messageid": "message_id",
    "x-message-id": "message_id",
    "sg_message_id": "message_id",
    "send_id": "send_id",
    "category": "category",
    "campaign": "category",
    "provider": "provider",
    "sent_at": "sent_at",
    "timestamp": "sent_at",
    "time": "sent_at",
    "sent": "sent_at",
}


def add_arguments(p):
    sub = p.add_subparsers(dest="sends_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser("import", help="record the sends listed in FILE", description=DESCRIPTION)
    imp.add_argument("file", metavar="FILE", help="CSV with an email column, or JSON lines")
    imp.add_argument(
        "--send-id",
        default=None,
        metavar="ID",
        help="the send these rows belong to (when the file has no send_id)",
    )
    imp.add_argument(
        "--category",
        default=None,
        metavar="NAME",
        help="category / campaign (when the file has none)",
    )
    imp.add_argument(
        "--provider",
        choices=("sendgrid", "ses", "cmc"),
        default=None,
        help="the provider it was sent through (when the file does not say)",
    )
    imp.add_argument(
        "--sent-at",
        default=None,
        metavar="TIME",
        help="when it was sent, ISO 8601 or epoch seconds (default: now)",
    )
    imp.add_argument(
        "--warehouse",
        metavar="URI",
        default=None,
        help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
        "(default: the embedded warehouse under $MAILPULSE_DATA_DIR)",
    )
    imp.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )


def read_records(text: str, name: str) -> list[dict]:
    """Rows of a CSV (header required) or JSON-lines file as send records."""
    import csv
    import json

    from ..errors import UsageError

    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"{name} holds no sends; give a CSV with an email column")
    if lines[0].lstrip().startswith("{"):
        out = []
        for n, line in enumerate(lines, 1):
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise UsageError(
                    f"{name}: line {n} is not JSON ({exc}); give one JSON object per line"
                ) from None
            if not isinstance(doc, dict):
                raise UsageError(f"{name}: line {n} is not a JSON object")
            out.append(
                {COLUMN_ALIASES.get(str(k).strip().lower(), str(k)): v for k, v in doc.items()}
            )
        return out
    delimiter = next((d for d in (",", "\t", ";") if d in lines[0]), ",")
    rows = list(csv.reader(lines, delimiter=delimiter))
    keys = [COLUMN_ALIASES.get(c.strip().lower()) for c in rows[0]]
    if "email" not in keys:
        raise UsageError(
            f"{name}: the first row ({', '.join(rows[0])}) names no email column; "
            "add a header with an 'email' column (and optionally message_id, "
            "send_id, category, provider, sent_at)"
        )
    return [{k: (v.strip() or None) for k, v in zip(keys, row) if k} for row in rows[1:]]


def run(args) -> int:
    import json

    from ..errors import UsageError
    from ..sends import SendsError, record_sends
    from ..warehouse import WarehouseError
    from ._common import read_input, warehouse_and_hasher

    text, name = read_input(
        args.file, args.file, "give the path of a CSV with an email column (or JSON lines)"
    )
    records = read_records(text, name)
    target, hasher = warehouse_and_hasher(args)
    try:
        done = record_sends(
            records,
            send_id=args.send_id,
            category=args.category,
            provider=args.provider,
            sent_at=args.sent_at,
            warehouse=target,
            hasher=hasher,
        )
    except (SendsError, WarehouseError) as exc:
        raise UsageError(f"{name}: {exc}") from None
    if args.format == "json":
        sys.stdout.write(json.dumps({"file": name, **done.as_dict()}) + "\n")
        return 0
    sends = ("send " if len(done.send_ids) == 1 else "sends ") + ", ".join(done.send_ids)
    sys.stdout.write(
        f"{name}: recorded {done.recorded} recipients of {sends}; "
        f"{done.already_recorded} already in the log"
        + (f", {done.duplicates} repeated in the file" if done.duplicates else "")
        + "\n"
    )
    return 0


# -- `mailpulse outcomes --by send` / `--send-id ID` ----------------------------------------
#: recipient statuses as the table prints them (None: no event at all)
STATUS_WORDS = {
    None: "never reported",
    "bounce": "bounced",
    "dropped": "dropped",
    "deferred": "deferred",
    "processed": "accepted only",
    "delivered": "delivered",
}


def run_send_view(args) -> int:
    """``mailpulse outcomes --by send|mailbox --send-id ID [--recipients]``: what the
    provider reported for each logged send (pipelines/sends.py). Reads only."""
    from ..errors import UsageError
    from ..outcomes import WINDOW_DAYS, window_ending
    from ..sends import read_send_outcomes, read_send_recipients, send_dates, summarize_sends
    from ..warehouse import WarehouseError, open_warehouse
    from ._common import warehouse_and_hasher

    send_id = getattr(args, "send_id", None)
    by = getattr(args, "by", None) or "send"
    if send_id is not None and not send_id.strip():
        raise UsageError(
            "--send-id needs the send's id (`mailpulse outcomes --by send` lists them)"
        )
    if by not in ("send", "mailbox"):
        raise UsageError(
            f"--send-id shows one send in total (--by send) or per mailbox provider "
            f"(--by mailbox), not --by {by}"
        )
    if getattr(args, "recompute", False):
        raise UsageError(
            "the send view reads the send log and the events as they are: there is nothing "
            "to recompute; drop --recompute"
        )
    for flag in ("soft_bounce_threshold", "soft_bounce_days"):
        if getattr(args, flag, None) is not None:
            raise UsageError(
                f"--{flag.replace('_', '-')} applies to --recompute, not to the send view"
            )
    recipients = bool(getattr(args, "recipients", False))
    if recipients and send_id is None:
        raise UsageError("--recipients lists who did not get one send: add --send-id ID")
    emails = getattr(args, "emails", None)
    if emails and not recipients:
        raise UsageError("--emails names the recipients listed by --recipients: add --recipients")
    target, hasher = warehouse_and_hasher(args, hash_key=bool(emails))
    names = _addresses_by_hash(emails, hasher) if emails else None
    try:
        wh = open_warehouse(target)
        if not wh.table_exists("sends"):
            raise UsageError(
                f"no send log in {wh.uri or args.warehouse}; record what you send with "
                "`mailpulse sends import FILE` (or `mailpulse watch`, which records its list)"
            )
        if not wh.table_exists("events"):
            raise UsageError(f"no events in {wh.uri or args.warehouse}; run `mailpulse load` first")
        start, end = args.start, args.end
        if send_id is not None:
            send_id = send_id.strip()
            lo, hi = send_dates(wh, send_id)
            if lo is None:
                raise UsageError(
                    f"send {send_id!r} is not in the send log of {wh.uri}; check the id "
                    "(`mailpulse outcomes --by send` lists the sends of the latest days)"
                )
            start, end = start or lo, end or hi
            if end < start:
                raise UsageError(f"--end {end} is before --start {start}; swap them")
        else:
            lo, hi = send_dates(wh)
            if hi is None:
                raise UsageError(
                    f"the send log of {wh.uri} is empty; record sends with "
                    "`mailpulse sends import FILE`"
                )
            if end is None:
                end = max(hi, start) if start is not None else hi
            days = getattr(args, "window_days", None)
            days = WINDOW_DAYS if days is None else days
            if days < 1:
                raise UsageError(f"--window-days must be at least 1, got {days}")
            start = start or window_ending(end, days)[0]
            if end < start:
                raise UsageError(f"--end {end} is before --start {start}; swap them")
        if recipients:
            df = read_send_recipients(wh, send_id, start=start, end=end)
            df = df[df["status"] != "delivered"].reset_index(drop=True)
            category = getattr(args, "category", None)
            if category is not None:
                df = df[df["category"] == category].reset_index(drop=True)
            if names is not None:
                df = df.assign(email=df["email_hash"].map(names))
        else:
            df = summarize_sends(
                read_send_outcomes(
                    wh, start, end, send_id=send_id, category=getattr(args, "category", None)
                ),
                by,
            )
    except WarehouseError as exc:
        raise UsageError(str(exc)) from None
    if recipients:
        print_send_recipients(df, send_id, args.format, sys.stdout)
    else:
        print_send_outcomes(df, start, end, args.format, sys.stdout, by=by, source=wh.uri)
    return 0


def _addresses_by_hash(emails: str, hasher) -> dict[str, str]:
    """The caller's list (--emails FILE), hashed here: hash -> the address as listed."""
    from ._common import read_input
    from .suppressions import read_list

    text, name = read_input(
        emails,
        f"--emails {emails}",
        "give the path of your list (one address per line, or a CSV with an email column)",
    )
    out: dict[str, str] = {}
    for address in read_list(text, name).addresses():
        if address.strip():
            out.setdefault(hasher.hash(address), address.strip())
    return out


def _table(cols: list[str], lines: list[list[str]], texts: int) -> list[str]:
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i < texts else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]


def format_send_table(df, start, end, source: str = "", by: str = "send") -> str:
    """One line per send (or per send and mailbox provider)."""
    from ..sends import REPORT_DAYS

    head = f"Sends {start} .. {end}" + (f"  ({source})" if source else "")
    if by == "mailbox":
        head += ", by mailbox provider"
    if df.empty:
        return head + "\nno sends in the send log for these dates\n"
    cols = (
        ["send id"]
        + (["mailbox provider"] if by == "mailbox" else [])
        + [
            "category",
            "sent",
            "reported",
            "never reported",
            "deliv %",
            "bounce %",
            "bounced (h/s/b/u)",
            "dropped",
            "deferred",
            "accepted only",
            "opened",
            "clicked",
        ]
    )
    lines, open_windows = [], []
    for r in df.to_dict(orient="records"):
        never = f"{r['never_reported']} ({_pct(r['never_reported_rate'])})"
        if not r["window_closed"]:
            never += " *"
            open_windows.append((r["send_id"], r["report_until"]))
        lines.append(
            [r["send_id"]]
            + ([r["mailbox_provider"]] if by == "mailbox" else [])
            + [
                r["categories"] or "-",
                str(r["sent"]),
                str(r["reported"]),
                never,
                _pct(r["delivered_rate"]),
                _pct(r["bounce_rate"]),
                bounced_cell(r),
                str(r["drops"]),
                str(r["deferred"]),
                str(r["accepted_only"]),
                str(r["opened"]),
                str(r["clicked"]),
            ]
        )
    body = _table(cols, lines, 3 if by == "mailbox" else 2)
    notes = [
        "",
        "sent = recipients in the send log; reported = recipients with any provider event "
        f"from their send time\nto {REPORT_DAYS} days after; never reported = sent, no event at all "
        "(an event before the send does not count).\nEach recipient counts once, at its "
        "most final status (as `mailpulse watch`): deliv % and bounce % divide by sent\n"
        "(bounce % excludes blocks, as `mailpulse outcomes`); deferred = still deferred.",
    ]
    for sid, until in dict(open_windows).items():
        notes.append(
            f"* {sid}: the report window is open until {until.isoformat()}: these "
            "recipients are not reported YET"
        )
    if by == "send" and len(df) == 1:
        notes.append(
            f"who did not get it: mailpulse outcomes --send-id {df.iloc[0]['send_id']} --recipients"
        )
    return "\n".join([head, *body, *notes]) + "\n"


def print_send_outcomes(df, start, end, fmt: str, out=None, *, by="send", source="") -> None:
    from ._output import write_rows

    out = out or sys.stdout
    if not write_rows(df, fmt, out):
        out.write(format_send_table(df, start, end, source, by=by))
    out.flush()


#: the columns `--recipients` prints (json/csv), in order
RECIPIENT_COLUMNS = (
    "email_hash",
    "recipient_domain",
    "mailbox_provider",
    "category",
    "provider",
    "sent_at",
    "status",
    "never_reported",
    "bounce_class",
    "status_event_ts",
)


def print_send_recipients(df, send_id: str, fmt: str, out=None) -> None:
    """The recipients of one send that did not get it (never reported, bounced, dropped,
    still deferred, accepted only), by hash."""
    from ._output import rows_for_json, write_rows

    out = out or sys.stdout
    named = "email" in df.columns
    cols = (["email"] if named else []) + list(RECIPIENT_COLUMNS)
    df = df.assign(never_reported=df["status"].isna())[cols]
    if not write_rows(df, fmt, out):
        head = f"Send {send_id}: {len(df)} recipients did not get it (delivered ones omitted)"
        if df.empty:
            out.write(head + "\n")
            return
        lines = [
            ([r["email"] or "(not in --emails)"] if named else [])
            + [
                r["email_hash"][:16] if named else r["email_hash"],
                r["recipient_domain"] or "-",
                r["mailbox_provider"],
                STATUS_WORDS.get(r["status"], r["status"])
                + (f" ({r['bounce_class']})" if r["status"] == "bounce" else ""),
            ]
            for r in rows_for_json(df)
        ]
        cols = (["email"] if named else []) + [
            "recipient (hash)",
            "domain",
            "mailbox provider",
            "status",
        ]
        body = _table(cols, lines, len(cols))
        note = (
            "addresses from your --emails list, hashed here (the warehouse holds hashes only)"
            if named
            else "the warehouse holds hashes only: add --emails FILE (your list) to see addresses"
        )
        out.write("\n".join([head, *body, "", note]) + "\n")
    out.flush()
