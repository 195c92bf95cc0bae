"""The ``mailpulse`` command.

Each subcommand is a module in :mod:`pipelines.commands` exposing ``NAME``, ``HELP``,
``ORDER``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules import their
heavy dependencies (Beam, BigQuery) inside ``run`` so ``mailpulse --help`` stays fast.
Exit codes: 0 success, 2 usage or configuration error (the message names the fix),
3 finished with dead letters (``normalize``) or timed out (``watch``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import __version__, commands

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A wrong flag, missing credential or bad configuration; the message says the fix."""


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailpulse",
        description="What happened to the mail we sent? Provider email events -> warehouse -> outcomes.")
    parser.add_argument("--version", action="version", version=f"mailpulse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _accepts_extra=getattr(mod, "ACCEPTS_EXTRA_ARGS", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="mailpulse: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"mailpulse {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"mailpulse {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
