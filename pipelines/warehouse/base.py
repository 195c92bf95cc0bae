"""The warehouse interface: what the load job, the outcomes job, the watcher and the
notebooks need from a warehouse, whatever engine is behind it.

SQL handed to :meth:`Warehouse.query` is BigQuery Standard SQL with bare table names
(``events``, ``delivery_outcomes``) and ``@name`` parameters; each backend runs it as
its engine needs (DuckDB translates, BigQuery sets the default dataset).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa

#: Counters a load reports per provider; they add up (see LoadReport.check()).
COUNTERS = (
    "records_read",
    "events_loaded",
    "duplicates_in_batch",
    "already_loaded",
    "dead_letters",
    "records_without_event",
)


class WarehouseError(RuntimeError):
    """A problem the user can fix (the message says how)."""


class TransientWarehouseError(WarehouseError):
    """Worth retrying: a lock held by another process, a 5xx, a dropped connection."""


@dataclass
class LoadBatch:
    """What a finished pipeline hands to :meth:`Warehouse.commit_load`."""

    load_id: str
    archive: str
    archive_date: date
    started_at: datetime
    event_files: list[str]  # Parquet files in the canonical event schema
    dead_letter_files: list[str]  # Parquet files in the dead-letter schema
    #: per provider: records_read, events_normalized, dead_letters, records_without_event,
    #: duplicates_in_batch (within one chunk, already dropped before staging)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    files_read: int = 0
    runner: str = ""
    #: ``loaded_files`` rows (see events.LOADED_FILE_FIELDS, less ``loaded_at``) of the
    #: files read; committed with the events, replacing earlier rows of the same URI
    files: list[dict[str, Any]] = field(default_factory=list)
    files_skipped: int = 0
    first_date: date | None = None
    status: str = "succeeded"  # or "empty": no archive file was found


@dataclass
class CommitResult:
    """Per provider: events_loaded, duplicates_in_batch (across chunks), already_loaded,
    dead_letters_stored (new dead-letter rows; reruns store none)."""

    per_provider: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionReplacement:
    """One item of :meth:`Warehouse.replace_partitions_many`: the rows of ``table`` with
    ``partition_column`` in [start, end] become the rows ``sql`` returns in that range."""

    table: str
    sql: str
    params: dict[str, Any]
    start: date
    end: date
    partition_column: str = "event_date"
    cluster_by: tuple[str, ...] = ()


class Warehouse(abc.ABC):
    dialect: str = ""
    uri: str = ""

    @abc.abstractmethod
    def ensure_schema(self) -> None:
        """Create ``events``, ``dead_letters`` and ``loads`` if missing (idempotent)."""

    @abc.abstractmethod
    def commit_load(self, batch: LoadBatch) -> CommitResult:
        """All or nothing: insert the batch's events whose ``event_id`` is not already
        stored (looked up within the batch's event-date range, duplicates within the
        batch removed), its dead letters not already stored (keyed by source_uri, line,
        record_index), its ``loaded_files`` rows (replacing rows of the same URI), and
        one ``loads`` row."""

    @abc.abstractmethod
    def loaded_files(self, first: date, last: date) -> dict[str, tuple[int, str]]:
        """The manifest for archive days [first, last]: source URI -> (size, generation)
        as last read (empty when nothing was loaded yet)."""

    @abc.abstractmethod
    def query(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        """Run BigQuery-dialect SQL with ``@name`` parameters; rows as Arrow."""

    def query_df(self, sql: str, params: dict[str, Any] | None = None):
        return self.query(sql, params).to_pandas()

    @abc.abstractmethod
    def replace_partitions(
        self,
        table: str,
        sql: str,
        params: dict[str, Any],
        start: date,
        end: date,
        partition_column: str = "event_date",
        cluster_by: tuple[str, ...] = (),
    ) -> int:
        """Atomically replace rows of ``table`` whose ``partition_column`` lies in
        [start, end] by the rows ``sql`` returns (creating the table, partitioned by that
        column, when missing). Returns the number of rows written."""

    def replace_partitions_many(self, items: "list[PartitionReplacement]") -> list[int]:
        """Like :meth:`replace_partitions` for several tables (or ranges), all in ONE
        transaction: after a crash either every item is replaced or none. Returns the
        rows written per item, in order. Backends that cannot do this atomically raise."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot replace several tables in one transaction"
        )

    @abc.abstractmethod
    def table_exists(self, name: str) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional: backends without resources keep it
        """Release connections (a no-op for backends that connect per call)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_counts(batch: LoadBatch, merged: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per-provider accounting from the pipeline's stats and the merge's counts.

    records_read = events_loaded + duplicates_in_batch + already_loaded + dead_letters
    + records_without_event, per provider.
    """
    per: dict[str, dict[str, int]] = {}
    providers = {p for p in batch.stats if not p.startswith("_")} | set(merged)
    for prov in sorted(providers):
        s = batch.stats.get(prov, {})
        m = merged.get(prov, {})
        per[prov] = {
            "records_read": s.get("records_read", 0),
            "events_loaded": m.get("events_loaded", 0),
            # chunk-level duplicates were dropped before staging; add those found at merge
            "duplicates_in_batch": s.get("duplicates_in_batch", 0)
            + m.get("duplicates_in_batch", 0),
            "already_loaded": m.get("already_loaded", 0),
            "dead_letters": s.get("dead_letters", 0),
            "records_without_event": s.get("records_without_event", 0),
        }
    return per
