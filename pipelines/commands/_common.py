"""Options several subcommands share, and turning them into configuration objects."""

from __future__ import annotations

import argparse
import os
from datetime import date, datetime

from ..hashing import EmailHasher, MissingHashKey, resolve_key
from ..normalizers.base import NormalizeContext
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


def hasher_from_env(embedded: bool = True) -> EmailHasher:
    from ..errors import UsageError

    try:
        return EmailHasher(resolve_key(os.environ, embedded=embedded))
    except MissingHashKey as exc:
        raise UsageError(str(exc)) from None


def context_from_args(
    args: argparse.Namespace,
    hasher: EmailHasher,
    source_uri: str = "",
    ingested_at: datetime | None = None,
) -> NormalizeContext:
    from ..errors import UsageError

    try:
        return NormalizeContext(
            hasher=hasher,
            source_uri=source_uri,
            ingested_at=ingested_at,
            ses_category_tag=args.ses_category_tag,
            cmc_timezone=args.cmc_timezone,
            cmc_category_field=args.cmc_category_field,
        )
    except Exception as exc:  # ZoneInfoNotFoundError and friends
        raise UsageError(
            f"--cmc-timezone {args.cmc_timezone!r} is not a known time zone "
            f"(use an IANA name such as Asia/Tokyo): {exc}"
        ) from None


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
