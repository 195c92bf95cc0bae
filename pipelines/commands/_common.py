"""Options several subcommands share (turned into configuration by :mod:`pipelines.settings`)."""

from __future__ import annotations

import argparse
import os
from datetime import date, datetime
from typing import Any

from ..hashing import EmailHasher
from ..records import DEFAULT_MAX_RECORD_BYTES


def add_normalize_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading provider records")
    g.add_argument(
        "--ses-category-tag",
        default="category",
        metavar="TAG",
        help="SES mail tag whose values are the categories (default: category)",
    )
    g.add_argument(
        "--cmc-timezone",
        default="Asia/Tokyo",
        metavar="TZ",
        help="time zone of Customers Mail Cloud 'created' times (default: Asia/Tokyo)",
    )
    g.add_argument(
        "--cmc-category-field",
        default=None,
        metavar="FIELD",
        help="CMC record field whose value becomes the category (e.g. apiData); default: none",
    )
    g.add_argument(
        "--max-record-bytes",
        type=_positive_bytes,
        default=DEFAULT_MAX_RECORD_BYTES,
        metavar="N",
        help="a record longer than N bytes becomes a dead letter without being "
        "read whole or parsed (default: 10485760, the collector's body "
        "limit)",
    )


def _positive_bytes(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a positive number of bytes (e.g. {DEFAULT_MAX_RECORD_BYTES})"
        )
    return n


def warehouse_and_hasher(args, *, hash_key: bool = True) -> tuple[Any, EmailHasher | None]:
    """(the warehouse ``--warehouse`` or the environment names, the hasher keyed by
    ``MAILPULSE_HASH_KEY``) for commands that hash addresses without reading records, by
    the rules of :class:`pipelines.settings.Settings`. ``hash_key=False``: no hasher (and
    no key needed). A Warehouse object given in-process is used as it is."""
    from ..settings import Settings, hasher_from

    target = getattr(args, "warehouse", None)
    if target is not None and not isinstance(target, str):
        embedded = getattr(target, "dialect", "") == "duckdb"
        return target, hasher_from(os.environ, embedded=embedded) if hash_key else None
    settings = Settings.from_args(args, hash_key=hash_key)
    return settings.warehouse, settings.hasher


def read_input(value: str, label: str, hint: str) -> tuple[str, str]:
    """(text, name) of a file argument, ``-`` for stdin; a missing file is a UsageError
    ``"{label}: no such file; {hint}"``."""
    import sys
    from pathlib import Path

    from ..errors import UsageError

    try:
        if value == "-":
            return sys.stdin.read(), "stdin"
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"{label}: no such file; {hint}")
        return path.read_text(encoding="utf-8-sig"), str(path)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label} is not UTF-8 text ({exc.reason}); {hint}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror}; {hint}") from None


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD") from None


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 (``2026-11-23T10:00:00Z``, a date, or epoch seconds) -> aware UTC
    (argparse type; the parsing itself is :func:`pipelines.timeutil.to_utc`)."""
    from ..timeutil import to_utc

    try:
        return to_utc(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a timestamp; use ISO 8601 such as 2026-11-23T10:00:00Z"
        ) from None
