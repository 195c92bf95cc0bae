"""Errors a user can meet, in one place (each message says what to do next).

- :class:`UsageError`: a wrong flag, a missing credential, bad configuration; the CLI
  prints it and exits 2.
- :class:`pipelines.warehouse.WarehouseError` (and ``TransientWarehouseError``), the
  storage and source errors live beside the code that raises them and are re-exported here
  so callers can catch them without knowing the room.
"""

from __future__ import annotations


class UsageError(Exception):
    """A wrong flag, missing credential or bad configuration; the message says the fix."""


def __getattr__(name: str):
    # Lazy re-exports: importing pipelines.errors stays cheap (no Beam, no DuckDB).
    if name in ("WarehouseError", "TransientWarehouseError"):
        from .warehouse import base

        return getattr(base, name)
    if name == "StorageError":
        from .storage import StorageError

        return StorageError
    if name == "SourceError":
        from .sources import SourceError

        return SourceError
    raise AttributeError(name)
