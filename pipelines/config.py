"""Defaults and the entry-point configuration (read once, then passed down as arguments)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MAILPULSE_DATA_DIR"


def data_dir(environ=None) -> Path:
    """Where the embedded default keeps its warehouse and archive: ``$MAILPULSE_DATA_DIR``
    or ``./mailpulse-data``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(DATA_DIR_ENV) or "mailpulse-data")


def default_warehouse_uri(environ=None) -> str:
    return "duckdb://" + str((data_dir(environ) / "warehouse.duckdb").resolve())  # duckdb:///abs


def default_archive(environ=None) -> str:
    """The archive is the warehouse file's sibling."""
    return str((data_dir(environ) / "archive").resolve())
