"""``mailpulse normalize``: show how provider payloads are read."""
from __future__ import annotations

import sys

NAME = "normalize"
ORDER = 10
HELP = "print canonical events (stdout) and dead letters (stderr) for payload files"
DESCRIPTION = """\
Reads files (one JSON document, or one record per line; plain or .gz) and prints one
canonical event per line as JSON on stdout; dead letters go to stderr as JSON with
source, line and reason. Exit 0 when every record was read, 3 when some became dead
letters, 2 for usage errors. Use '-' to read standard input."""


def add_arguments(p):
    from ..normalizers import PROVIDER_CHOICES
    from ._common import add_normalize_options
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto",
                   help="provider of the records (default: auto, detected per record)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="payload files ('-' for stdin)")
    add_normalize_options(p)


def run(args) -> int:
    import orjson

    from ..cli import UsageError
    from ..events import event_to_json
    from ..normalizers import normalize_records
    from ..records import decompress, iter_records
    from ._common import context_from_args, hasher_from_env

    hasher = hasher_from_env(embedded=True)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    dead = 0
    for path in args.paths:
        try:
            data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        ctx = context_from_args(args, hasher, source_uri="<stdin>" if path == "-" else path)
        res = normalize_records(iter_records(decompress(data)), ctx, args.provider)
        for ev in res.events:
            out.write(orjson.dumps(event_to_json(ev)) + b"\n")
        out.flush()
        for dl in res.dead_letters:
            err.write(orjson.dumps(dl.as_dict()) + b"\n")
        err.flush()
        dead += len(res.dead_letters)
    return 3 if dead else 0
