"""``mailpulse sends import FILE``: add what you sent to the send log (pipelines/sends.py)."""

from __future__ import annotations

import sys

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
    from pathlib import Path

    from ..errors import UsageError
    from ..sends import SendsError, record_sends
    from ..warehouse import WarehouseError
    from ._common import warehouse_and_hasher

    if args.file == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(
                f"{args.file}: no such file; give the path of a CSV with an "
                "email column (or JSON lines)"
            )
        text, name = path.read_text(encoding="utf-8-sig"), str(path)
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
    sends = ", ".join(done.send_ids)
    sys.stdout.write(
        f"{name}: recorded {done.recorded} sends ({sends}); "
        f"{done.already_recorded} already in the log"
        + (f", {done.duplicates} repeated in the file" if done.duplicates else "")
        + "\n"
    )
    return 0
