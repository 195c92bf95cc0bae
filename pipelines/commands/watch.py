"""``mailpulse watch``: wait for a send to settle and print (and post) the summary."""

from __future__ import annotations

import sys

NAME = "watch"
ORDER = 60
HELP = "wait until a send's recipients have settled; print and post a bounce summary"
DESCRIPTION = """\
Waits until every recipient in --emails is settled (delivered, bounced or dropped) for
mail of --category sent since --since, or until the timeout, then prints the summary
(and posts it to Slack when SLACK_BOT_TOKEN and MAILPULSE_SLACK_CHANNEL are set; the
bounced and dropped addresses go into the message's thread as a CSV).

--emails is a file with one address per line ('-' for standard input); blank lines and
lines starting with '#' are skipped; a CSV with an 'email' column also works.
Addresses are hashed locally; only hashes are sent to the warehouse.

A warehouse that does not exist yet (nothing loaded so far) is waited for like events
not seen yet. While no recipient has any event in --category, the watch says on stderr
at once (and in the summary / JSON "hint") which categories these recipients do have
events in, or that their events carry no category: a misspelled --category or CMC mail
loaded without --cmc-category-field shows in seconds, not at the timeout.

The list is recorded in the send log (the `sends` table, hashes only) under --send-id
(default: CATEGORY@SINCE), once the warehouse exists; the id is printed. `mailpulse watch
--send-id ID` without --emails resumes that watch from the log, from another process or
later: recipients, category and send time come from the log, and the result names
recipients by hash. At the timeout, recipients with no event at all are reported as
"sent, never reported by the provider".

Exit codes: 0 settled, 3 timed out (the summary shows what was known), 2 usage errors,
1 the warehouse kept failing."""

EXIT_TIMED_OUT = 3


def add_arguments(p):
    from ._common import parse_timestamp

    p.add_argument(
        "--category",
        default=None,
        help="the category the mail was sent with (required with --emails)",
    )
    p.add_argument(
        "--since",
        default=None,
        type=parse_timestamp,
        metavar="TIMESTAMP",
        help="when the send started: ISO 8601 (2026-11-23T10:00:00Z; no offset "
        "means UTC) or epoch seconds (required with --emails)",
    )
    p.add_argument(
        "--emails",
        default=None,
        metavar="FILE",
        help="the recipients, one address per line ('-' for stdin)",
    )
    p.add_argument(
        "--send-id",
        default=None,
        metavar="ID",
        help="the send's id in the send log: with --emails, record the list "
        "under it (default CATEGORY@SINCE); without, resume that watch",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait (default: 15 min + 1 s per 10 recipients, at most 3 h)",
    )
    p.add_argument(
        "--warehouse",
        default=None,
        metavar="URI",
        help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
        "(default: the embedded warehouse under $MAILPULSE_DATA_DIR)",
    )
    p.add_argument(
        "--no-notify",
        action="store_true",
        help="do not post to Slack (the summary is still printed)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object instead of the text summary",
    )


def read_addresses(path: str) -> list[str]:
    """Addresses from a file: one per line, or a CSV with an ``email`` column."""
    import csv
    import io

    from ..errors import UsageError

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8-sig").read()
    except OSError as exc:
        raise UsageError(
            f"cannot read --emails {path}: {exc.strerror}; pass a file with one address per line"
        ) from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--emails {path} is not UTF-8 text ({exc.reason}); pass a text "
            "file with one address per line"
        ) from None
    from .suppressions import EMAIL_COLUMNS

    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # the separators and header names `mailpulse suppressions` reads and writes, so a
    # cleaned list (CSV, TSV or ;-separated) can be watched as it is
    delimiter = next((d for d in (",", "\t", ";") if lines and d in lines[0]), None)
    if delimiter is not None:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        header = [h.strip().lower() for h in rows[0]]
        col = next((i for i, h in enumerate(header) if h in EMAIL_COLUMNS), None)
        if col is None:
            raise UsageError(
                f"--emails {path} looks like CSV but has no 'email' column; "
                "add a header 'email' or pass one address per line"
            )
        return [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]
    addresses = [ln.strip() for ln in lines]
    if addresses and addresses[0].lower() in EMAIL_COLUMNS:
        addresses = addresses[1:]
    return addresses


def run(args) -> int:
    import json
    import os

    from ..errors import UsageError
    from ..slack import SlackConfig, SlackConfigError, SlackNotifier
    from ..warehouse import WarehouseError, open_warehouse
    from ..watcher import WatchFailed, resume, watch
    from ._common import warehouse_and_hasher

    if args.emails is None:
        if not args.send_id:
            raise UsageError(
                "pass --emails FILE with --category and --since to watch a "
                "send, or --send-id ID to resume one from the send log"
            )
        if args.since is not None:
            raise UsageError(
                "--since comes from the send log when resuming with --send-id; "
                "drop --since (or pass --emails to watch a new list)"
            )
        addresses = None
    else:
        missing = [
            f for f, v in (("--category", args.category), ("--since", args.since)) if v is None
        ]
        if missing:
            raise UsageError(
                f"--emails needs {' and '.join(missing)} (the category and start time of the send)"
            )
        addresses = read_addresses(args.emails)
        if not addresses:
            raise UsageError(
                f"--emails {args.emails} holds no address; pass a file with one address per line"
            )
    if args.send_id is not None and not args.send_id.strip():
        raise UsageError("--send-id must not be empty")
    if args.timeout is not None and args.timeout < 0:
        raise UsageError("--timeout must be 0 or more seconds")

    # Configuration enters here, once, and flows down.
    notifier = None
    if not args.no_notify:
        try:
            config = SlackConfig.from_env(os.environ)
        except SlackConfigError as exc:
            raise UsageError(str(exc)) from None
        # Without a token the summary printed below is the console summary.
        notifier = SlackNotifier(config) if config is not None else None
    try:
        target, hasher = warehouse_and_hasher(args, hash_key=addresses is not None)
        wh = open_warehouse(target)
        if addresses is None:
            result = resume(
                args.send_id,
                category=args.category,
                timeout=args.timeout,
                warehouse=wh,
                notify=notifier is not None,
                notifier=notifier,
            )
        else:
            result = watch(
                addresses,
                args.category,
                args.since,
                timeout=args.timeout,
                warehouse=wh,
                notify=notifier is not None,
                notifier=notifier,
                hasher=hasher,
                send_id=args.send_id,
            )
    except WatchFailed as exc:
        print(f"mailpulse watch: error: {exc}", file=sys.stderr)
        if exc.result is not None:
            print(exc.result.summary(), file=sys.stderr)
        return 1
    except WarehouseError as exc:
        raise UsageError(str(exc)) from None

    if args.json:
        out = result.as_dict()
        if result.notification is not None:
            n = result.notification
            out["slack"] = {
                "ts": n.ts,
                "channel": n.channel,
                "file_id": n.file_id,
                "errors": n.errors,
            }
        print(json.dumps(out, default=str))
    else:
        print(result.summary())
        n = result.notification
        if n is not None and n.ts:
            print(f"  posted to Slack ({n.channel}, ts {n.ts})")
        elif n is not None and n.errors:
            print(f"  not posted to Slack: {'; '.join(n.errors)}", file=sys.stderr)
    return 0 if result.settled else EXIT_TIMED_OUT
