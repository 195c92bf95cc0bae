"""The ``mailpulse`` command.

Each subcommand is a module in :mod:`pipelines.commands` exposing ``NAME``, ``HELP``,
``ORDER``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules import their
heavy dependencies (Beam, BigQuery) inside ``run`` so ``mailpulse --help`` stays fast.
Exit codes: 0 success, 2 usage or configuration error (the message names the fix),
3 finished with dead letters (``normalize``) or timed out (``watch``).

The command line is checked before any command runs: a flag the command does not know is a
usage error naming the closest flag. Commands with ``ACCEPTS_EXTRA_ARGS`` (``load``,
``run``, ...) hand the flags they do not know to Beam as pipeline options; those are
checked here against every option Beam registers (:func:`check_beam_args`), so a
misspelled ``--warehose X`` fails instead of being dropped by Beam with a warning. A
``--warehouse`` URI is checked for shape (:func:`pipelines.warehouse.check_warehouse_uri`)
before the command asks for a hash key or connects.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import pkgutil
import sys

from . import __version__, commands
from .errors import UsageError  # re-exported: scripts import it from pipelines.cli

__all__ = ["main", "build_parser", "UsageError"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


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
        description="What happened to the mail we sent? Provider email events -> warehouse -> outcomes.",
    )
    parser.add_argument("--version", action="version", version=f"mailpulse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(
            _run=mod.run,
            _accepts_extra=getattr(mod, "ACCEPTS_EXTRA_ARGS", False),
            _quick_exit=getattr(mod, "QUICK_EXIT", False),
            _parser=p,
        )
    return parser


# -- checking the command line ----------------------------------------------------------
class _BeamFlagError(Exception):
    """Beam's option parser rejected a value (e.g. ``--num_workers=many``)."""


def beam_option_parser() -> argparse.ArgumentParser:
    """An argument parser holding every pipeline option Beam knows, built the way Beam's
    own ``PipelineOptions.get_all_options`` builds it: each direct subclass of
    ``PipelineOptions`` (deduplicated by name) registers its flags through
    ``_add_argparse_args``, abbreviations off. It raises instead of exiting."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class _RaisingParser(_BeamArgumentParser):
        def error(self, message):
            raise _BeamFlagError(message)

    parser = _RaisingParser(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The ``--long`` flags a parser defines (``--help`` left out)."""
    return sorted(
        {
            o
            for a in parser._actions
            for o in a.option_strings
            if o.startswith("--") and o != "--help"
        }
    )


def closest_flag(name: str, own: list[str], beam: list[str] = ()) -> str | None:
    """The command's own flag closest to ``name``; failing that Beam's, marked as such."""
    for candidates, note in ((own, ""), (beam, " (a Beam pipeline option)")):
        match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        if match:
            return match[0] + note
    return None


def unknown_arguments(args: list[str], own: list[str], beam: list[str] = ()) -> list[str]:
    """One line per argument nobody knows: a flag (``--x``, ``--x=v``) with the closest
    known flag, or a stray value. A value right after an unknown flag is taken to be that
    flag's value and not reported again."""
    problems: list[str] = []
    after_flag = False
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            name = arg.split("=", 1)[0]
            hint = closest_flag(name, own, beam)
            problems.append(f"{name}" + (f" (did you mean {hint}?)" if hint else ""))
            after_flag = "=" not in arg
        elif after_flag:
            after_flag = False
        else:
            problems.append(f"unexpected value {arg!r}")
    return problems


def _is_number(arg: str) -> bool:
    try:
        float(arg)
        return True
    except ValueError:
        return False


def check_beam_args(extra: list[str], own: list[str]) -> list[str]:
    """``extra`` (what the command's parser did not know) checked against Beam's options.

    Returns ``extra`` unchanged when Beam knows every flag in it and accepts its values;
    raises :class:`UsageError` naming each unknown flag and the closest known one."""
    parser = beam_option_parser()
    try:
        known, unknown = parser.parse_known_args(extra)
    except _BeamFlagError as exc:
        raise UsageError(f"{exc} (a Beam pipeline option)") from None
    if known.dry_run is not False:  # Beam reads any value, even "False", as a dry run
        raise UsageError(
            "--dry_run cannot be used with a mailpulse command: the runner would return "
            "without reading anything and the load would then record every file as loaded. "
            "To check a Dataflow job without submitting it, build it with "
            "pipelines.load.build_pipeline (see tests/test_dataflow_dry_run.py)"
        )
    if unknown:
        problems = unknown_arguments(unknown, own, long_flags(parser))
        raise UsageError(
            "unrecognized argument"
            + ("s" if len(problems) > 1 else "")
            + ": "
            + "; ".join(problems)
            + ". Neither mailpulse nor Beam knows "
            + ("them" if len(problems) > 1 else "it")
            + " (see --help for this command's flags; Beam's pipeline options are passed on)"
        )
    return extra


def check_command_line(args: argparse.Namespace, extra: list[str]) -> None:
    """Raise :class:`UsageError` for unknown flags and for a malformed ``--warehouse``,
    before the command runs (so before it asks for a hash key or connects)."""
    sub: argparse.ArgumentParser = args._parser
    if extra:
        own = long_flags(sub)
        if getattr(args, "_accepts_extra", False):
            check_beam_args(extra, own)
        else:
            problems = unknown_arguments(extra, own)
            raise UsageError(
                "unrecognized argument"
                + ("s" if len(problems) > 1 else "")
                + ": "
                + "; ".join(problems)
                + " (see --help for this command's flags)"
            )
    target = getattr(args, "warehouse", None)
    if isinstance(target, str):
        from .warehouse import WarehouseError, check_warehouse_uri

        try:
            check_warehouse_uri(target)
        except WarehouseError as exc:
            raise UsageError(f"argument --warehouse: {exc}") from None


class _BeamWorkerNoise(logging.Filter):
    """Beam's local worker processes warn at every start that they have no
    ``semi_persistent_directory`` (a Dataflow worker setting, meaningless here): that one
    message is dropped; every other worker log passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No semi_persistent_directory found" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    return _main(argv)[0]


def entry() -> None:
    """The ``mailpulse`` console script and ``python -m pipelines``: :func:`main`, exit.

    After a command whose module sets ``QUICK_EXIT`` (``load``) the process leaves
    without the interpreter's teardown: the load is committed and its report printed,
    and freeing the objects of Beam's thousands of modules one by one added 0.5 s to
    every load. Log handlers and streams are flushed first; a live non-daemon thread (one
    Python would wait for) means the normal exit.
    """
    import threading

    rc, quick = _main(None)
    if quick and not any(
        t.is_alive() and not t.daemon and t is not threading.main_thread()
        for t in threading.enumerate()
    ):
        from .beam_worker import exit_now

        exit_now(rc)
    sys.exit(rc)


def _main(argv: list[str] | None) -> tuple[int, bool]:
    """(exit status, whether the process may leave without teardown)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        check_command_line(args, extra)
    except UsageError as exc:  # argparse's format: the usage line, then the error
        args._parser.print_usage(sys.stderr)
        print(f"mailpulse {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE, False
    args.extra = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="mailpulse: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(
        _BeamWorkerNoise()
    )
    try:
        return int(args._run(args) or 0), args._quick_exit
    except UsageError as exc:
        print(f"mailpulse {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE, False
    except KeyboardInterrupt:
        print(f"mailpulse {args.command}: interrupted", file=sys.stderr)
        return 130, False
    except BrokenPipeError:
        return EXIT_OK, False


if __name__ == "__main__":
    entry()
