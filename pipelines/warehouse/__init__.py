"""Warehouse backends behind one interface; ``open_warehouse`` takes a URI or an object.

- ``duckdb:///path/to/file.duckdb`` (the embedded default)
- ``bigquery://PROJECT/DATASET``
"""

from __future__ import annotations

from typing import Any

from .base import (
    COUNTERS,
    CommitResult,
    LoadBatch,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
)

__all__ = [
    "open_warehouse",
    "check_warehouse_uri",
    "Warehouse",
    "WarehouseError",
    "TransientWarehouseError",
    "LoadBatch",
    "CommitResult",
    "COUNTERS",
]


def open_warehouse(target: "str | Warehouse", **options: Any) -> Warehouse:
    """A warehouse object for a URI string (or the object itself, unchanged)."""
    if isinstance(target, Warehouse):
        return target
    if not isinstance(target, str) or "://" not in target:
        raise WarehouseError(
            f"not a warehouse URI: {target!r}; use duckdb:///path/file.duckdb or "
            "bigquery://PROJECT/DATASET"
        )
    scheme = target.split("://", 1)[0].lower()
    if scheme == "duckdb":
        from .duckdb import DuckDBWarehouse

        return DuckDBWarehouse.from_uri(target, **options)
    if scheme == "bigquery":
        from .bigquery import BigQueryWarehouse

        return BigQueryWarehouse.from_uri(target, **options)
    raise WarehouseError(
        f"unknown warehouse scheme {scheme!r} in {target!r}; use duckdb:///path/file.duckdb "
        "or bigquery://PROJECT/DATASET"
    )


def check_warehouse_uri(target: "str | Warehouse") -> str:
    """The canonical URI of ``target``, checked for shape only: no connection, no file
    opened or created, no credential or hash key read. Raises :class:`WarehouseError`
    naming the accepted forms, exactly as :func:`open_warehouse` would for the same URI,
    so a command can reject a wrong ``--warehouse`` before it asks for anything else."""
    if isinstance(target, Warehouse):
        return target.uri
    # open_warehouse only parses: both backends connect on first use (DuckDB in
    # ``connect``, BigQuery when ``client`` is first read), so building one checks the URI.
    wh = open_warehouse(target)
    return wh.uri
