"""``mailpulse normalize``: show how provider payloads are read."""

from __future__ import annotations

import os
import sys

NAME = "normalize"
ORDER = 10
HELP = "print canonical events (stdout) and dead letters (stderr) for payload files"
DESCRIPTION = """\
Reads files (one JSON document, or one record per line; plain or .gz) and prints one
canonical event per line as JSON on stdout; dead letters go to stderr as JSON with
source, line and reason (and the record, with addresses redacted; a truncated or
corrupt .gz is reported the same way). Exit 0 when every record was read, 3 when some
became dead letters, 2 for usage errors. Use '-' to read standard input.

A file is one JSON document (pretty-printed or not), several concatenated documents,
or one record per line (NDJSON); gzip is recognised by content, not by name."""


def add_arguments(p):
    from ..normalizers import PROVIDER_CHOICES
    from ._common import add_normalize_options

    p.add_argument(
        "--provider",
        choices=PROVIDER_CHOICES,
        default="auto",
        help="provider of the records (default: auto, detected per record)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="payload files ('-' for stdin)")
    add_normalize_options(p)


#: Dead letters on stderr show at most this much of the raw record (the file has it all).
RAW_PREVIEW_CHARS = 2000


def run(args) -> int:
    import orjson

    from ..errors import UsageError
    from ..events import DeadLetter, event_to_json
    from ..normalizers import normalize_records
    from ..normalizers.base import redact_addresses, redacted_preview
    from ..records import read_blocks, read_records
    from ..settings import Settings

    # Check every path before printing anything, so a typo in the last path does not
    # leave half an output behind.
    for path in args.paths:
        if path != "-" and not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            raise UsageError(f"{path} {what}; pass payload files (or '-' for standard input)")

    settings = Settings.from_args(args, os.environ).normalize
    out, err = sys.stdout.buffer, sys.stderr.buffer
    dead = 0

    def report(dl: DeadLetter) -> None:
        # Dead letters can quote anything, including recipients: redact addresses.
        d = dl.as_dict()
        raw = d.pop("raw") or ""
        d["reason"] = redact_addresses(d["reason"])
        # (a cut inside an address drops the local part's piece at the cut too)
        d["raw"] = redacted_preview(raw, RAW_PREVIEW_CHARS)
        err.write(orjson.dumps(d) + b"\n")

    for path in args.paths:
        source = "<stdin>" if path == "-" else path
        ctx = settings.for_file(source)
        # Streamed like a load: a record over --max-record-bytes is skipped, not held.
        last_line = [0]

        def records(blocks, last_line=last_line):
            for rec in read_records(blocks, settings.max_record_bytes):
                last_line[0] = rec.line
                yield rec

        try:
            if path == "-":
                blocks = read_blocks(sys.stdin.buffer)
                res = normalize_records(records(blocks), ctx, args.provider)
            else:
                with open(path, "rb") as f:
                    blocks = read_blocks(f)
                    res = normalize_records(records(blocks), ctx, args.provider)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        problem = blocks.problem
        for ev in res.events:
            out.write(orjson.dumps(event_to_json(ev)) + b"\n")
        out.flush()
        letters = list(res.dead_letters)
        if problem is not None:
            letters.append(
                DeadLetter(reason=problem, raw="", source_uri=source, line=last_line[0] + 1)
            )
        for dl in letters:
            report(dl)
        err.flush()
        dead += len(letters)
    return 3 if dead else 0
