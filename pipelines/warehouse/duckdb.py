"""The embedded default: one DuckDB file.

DuckDB allows one writer process at a time, and while it writes no other process can
open the file, even read-only (PLATFORM-NOTES). So every operation connects briefly:
the load job holds the file only for its final commit, and readers (the watcher, the
notebooks) connect per query and retry while a writer holds the lock.

Every session runs with ``TimeZone='UTC'`` so ``DATE(ts)`` means the UTC date.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa

from ..backoff import Backoff, retry_call
from ..events import (
    DEAD_LETTER_FIELDS,
    EVENT_FIELDS,
    LOAD_FIELDS,
    LOADED_FILE_FIELDS,
    LOADED_FILE_SCHEMA,
    Field,
)
from .base import (
    COUNTERS,
    CommitResult,
    LoadBatch,
    PartitionReplacement,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
    load_counts,
)

log = logging.getLogger(__name__)

_DUCK_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATE": "DATE",
}


def ddl_columns(fields: tuple[Field, ...]) -> str:
    cols = []
    for f in fields:
        t = _DUCK_TYPES[f.bq_type]
        if f.mode == "REPEATED":
            t += "[]"
        cols.append(f'"{f.name}" {t}' + (" NOT NULL" if f.mode == "REQUIRED" else ""))
    return ", ".join(cols)


#: How long to wait for another process's lock on the file (named, overridable): 60
#: tries, 0.05 s apart at first, growing 1.6 times up to 1 s (54 s of waiting in all).
DEFAULT_LOCK_RETRY = Backoff(initial=0.05, maximum=1.0, multiplier=1.6, attempts=60)


def _translated(sql: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """BigQuery SQL as DuckDB SQL, and the parameters it uses. sqlglot is imported here,
    on the first query: a load never needs it (it cost the load's start 0.17 s)."""
    from ..sql import to_duckdb, used_params

    duck = to_duckdb(sql)
    return duck, dict(used_params(duck, params))


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower() and isinstance(exc, duckdb.IOException)


def lock_holder(exc: Exception) -> str:
    """Who holds the file, from DuckDB's lock error ("... (PID 1234) ..."), for messages."""
    m = re.search(r"PID (\d+)", str(exc))
    if not m:
        return "another process"
    pid = m.group(1)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"process {pid}" + (f" ({cmd[:120]})" if cmd else "")


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    #: The commit's working memory; beyond it DuckDB spills to ``<file>.tmp`` so a load's
    #: peak memory does not grow with the size of the batch. (2M events: the same commit
    #: time at 256 MB as at 384 MB, and the load's peak 599 -> about 555 MiB.)
    COMMIT_MEMORY_LIMIT = "256MB"

    def __init__(
        self,
        path: str,
        *,
        lock_retry: Backoff = DEFAULT_LOCK_RETRY,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = os.path.abspath(path)
        self.uri = "duckdb://" + self.path  # duckdb:///abs/path
        self.lock_retry = lock_retry
        self._sleep = sleep
        self._schema_ready = False

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> "DuckDBWarehouse":
        path = uri.split("://", 1)[1]
        if not path or path.endswith("/"):
            raise WarehouseError(f"{uri!r} names no file; use duckdb:///path/to/file.duckdb")
        return cls(path, **options)

    def __repr__(self) -> str:
        return f"DuckDBWarehouse({self.path!r})"

    # -- connections --------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, retrying while another process holds the file."""
        if read_only and not os.path.exists(self.path):
            raise WarehouseError(
                f"no warehouse at {self.path}; run `mailpulse load` (or `mailpulse run`) first"
            )
        if not read_only:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fix = (
            "DuckDB lets one process write at a time, and no process open the "
            "file while another writes: close that connection (a notebook "
            "kernel, `mailpulse watch`, a duckdb shell) or wait for it to finish"
        )
        attempts = 0

        def open_file() -> duckdb.DuckDBPyConnection:
            nonlocal read_only
            try:
                return duckdb.connect(self.path, read_only=read_only)
            except duckdb.ConnectionException as exc:
                if read_only and "different configuration" in str(exc):
                    # This process already has the file open for writing: share that.
                    read_only = False
                    return duckdb.connect(self.path, read_only=False)
                raise

        def waiting(exc: BaseException, delay: float | None) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                log.warning(
                    "waiting for %s: it is held by %s. %s", self.path, lock_holder(exc), fix
                )

        try:
            con = retry_call(
                open_file,
                self.lock_retry,
                predicate=_is_lock_error,
                sleep=self._sleep,
                on_error=waiting,
            )
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise WarehouseError(f"cannot open {self.path}: {exc}") from exc
            raise TransientWarehouseError(
                f"{self.path} is held by {lock_holder(exc)}; gave up after {attempts} "
                f"attempts. {fix}."
            ) from exc
        try:
            con.execute("SET TimeZone='UTC'")
            yield con
        finally:
            con.close()

    # -- schema -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self.connect() as con:
            # one transaction: a process killed here leaves all tables or none
            con.execute("BEGIN TRANSACTION")
            try:
                self._create_tables(con)
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
        self._schema_ready = True

    TABLES = (
        ("events", EVENT_FIELDS),
        ("dead_letters", DEAD_LETTER_FIELDS),
        ("loads", LOAD_FIELDS),
        ("loaded_files", LOADED_FILE_FIELDS),
    )

    @classmethod
    def _create_tables(cls, con) -> None:
        for name, fields in cls.TABLES:
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({ddl_columns(fields)})")
            # A file made by an older version gains the (nullable) columns added since.
            have = {
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $t",
                    {"t": name},
                ).fetchall()
            }
            for f in fields:
                if f.name not in have:
                    if f.mode == "REQUIRED":
                        raise WarehouseError(
                            f"{name} lacks required column {f.name}; this "
                            "warehouse file was made by another version"
                        )
                    col = ddl_columns((f,))
                    con.execute(f"ALTER TABLE {name} ADD COLUMN {col}")

    def table_exists(self, name: str) -> bool:
        if not os.path.exists(self.path):
            return False
        with self.connect(read_only=True) as con:
            return bool(
                con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = $n",
                    {"n": name},
                ).fetchone()[0]
            )

    # -- load ---------------------------------------------------------------------------
    def commit_load(self, batch: LoadBatch) -> CommitResult:
        result = CommitResult()
        with self.connect() as con:
            con.execute(f"SET memory_limit = '{self.COMMIT_MEMORY_LIMIT}'")
            con.execute("SET preserve_insertion_order = false")
            con.execute("BEGIN TRANSACTION")
            try:
                self._create_tables(con)
                per = self._merge_events(con, batch.event_files)
                stored = self._merge_dead_letters(con, batch.dead_letter_files)
                for prov, n in stored.items():
                    per.setdefault(prov, {})["dead_letters_stored"] = n
                result.per_provider = per
                self._upsert_loaded_files(con, batch.files)
                self._insert_load_row(con, batch, per)
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
        return result

    @staticmethod
    def _merge_events(con, files: list[str]) -> dict[str, dict[str, int]]:
        """Insert staged events whose id is not stored yet; count per provider.

        Reads the staged Parquet files directly (no copy of the batch in memory):
        new = distinct ids in the batch - distinct ids already stored, where "stored" is
        looked up within the batch's event-date range (an event always has one date).
        """
        per: dict[str, dict[str, int]] = {}
        if not files:
            return per
        p = {"f": files}
        lo, hi = con.execute(
            "SELECT min(event_date), max(event_date) FROM read_parquet($f)", p
        ).fetchone()
        if lo is None:
            return per
        p.update(lo=lo, hi=hi)
        # The ids the batch holds more than once (chunks are deduplicated already, so
        # few), grouped once: the per-provider counts and the insert below both use them.
        dup = f"_mailpulse_dup_{uuid.uuid4().hex[:12]}"
        con.execute(
            f"CREATE TEMP TABLE {dup} AS SELECT event_id "
            "FROM read_parquet($f) GROUP BY event_id HAVING count(*) > 1",
            {"f": files},
        )
        # per provider: rows minus distinct ids, which differ only among the repeated ids
        repeats = dict(
            con.execute(
                "SELECT provider, count(*) - count(DISTINCT event_id) FROM read_parquet($f) "
                f"WHERE event_id IN (SELECT event_id FROM {dup}) GROUP BY provider",
                {"f": files},
            ).fetchall()
        )
        staged = [
            (prov, n, n - int(repeats.get(prov) or 0))
            for prov, n in con.execute(
                "SELECT provider, count(*) FROM read_parquet($f) GROUP BY provider", {"f": files}
            ).fetchall()
        ]
        stored = dict(
            con.execute(
                """
            SELECT s.provider, count(DISTINCT s.event_id) FROM read_parquet($f) s
            WHERE EXISTS (SELECT 1 FROM events e
                          WHERE e.event_date BETWEEN $lo AND $hi AND e.event_id = s.event_id)
            GROUP BY s.provider""",
                p,
            ).fetchall()
        )
        # One row per event_id (the earliest occurrence), only ids not stored yet. Ids the
        # batch holds once (nearly all) stream straight from the staged files; only
        # repeated ids go through the window that picks the earliest (a window over the
        # whole batch cost 2 s per 0.5M events).
        con.execute(
            f"""
            INSERT INTO events
            WITH stored AS (SELECT event_id FROM events WHERE event_date BETWEEN $lo AND $hi)
            SELECT s.* FROM read_parquet($f) s
            WHERE s.event_id NOT IN (SELECT event_id FROM {dup})
              AND s.event_id NOT IN (SELECT event_id FROM stored)
            UNION ALL
            SELECT d.* EXCLUDE (_rn) FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY event_id ORDER BY event_ts, source_uri NULLS LAST) AS _rn
                FROM read_parquet($f) WHERE event_id IN (SELECT event_id FROM {dup})) d
            WHERE d._rn = 1 AND d.event_id NOT IN (SELECT event_id FROM stored)
        """,
            p,
        )
        con.execute(f"DROP TABLE {dup}")
        for prov, n, d in staged:
            already = stored.get(prov, 0)
            per[prov] = {
                "events_loaded": d - already,
                "duplicates_in_batch": n - d,
                "already_loaded": already,
            }
        return per

    @staticmethod
    def _merge_dead_letters(con, files: list[str]) -> dict[str, int]:
        if not files:
            return {}
        rows = con.execute(
            """
            WITH incoming AS (
                SELECT * FROM read_parquet($f)
                QUALIFY row_number() OVER (PARTITION BY source_uri, line, record_index) = 1),
            fresh AS (
                SELECT i.* FROM incoming i WHERE NOT EXISTS (
                    SELECT 1 FROM dead_letters d
                    WHERE d.source_uri = i.source_uri AND d.line = i.line
                      AND d.record_index = i.record_index))
            SELECT coalesce(provider, ''), count(*) FROM fresh GROUP BY ALL
        """,
            {"f": files},
        ).fetchall()
        con.execute(
            """
            INSERT INTO dead_letters
            SELECT i.* FROM (
                SELECT * FROM read_parquet($f)
                QUALIFY row_number() OVER (PARTITION BY source_uri, line, record_index) = 1) i
            WHERE NOT EXISTS (
                SELECT 1 FROM dead_letters d
                WHERE d.source_uri = i.source_uri AND d.line = i.line
                  AND d.record_index = i.record_index)
        """,
            {"f": files},
        )
        return {prov: n for prov, n in rows}

    @staticmethod
    def _upsert_loaded_files(con, rows: list[dict[str, Any]]) -> None:
        """Manifest rows of this load replace earlier rows of the same URIs."""
        if not rows:
            return
        now = datetime.now(timezone.utc)
        table = pa.Table.from_pylist(
            [{**r, "loaded_at": now} for r in rows], schema=LOADED_FILE_SCHEMA
        )
        con.register("_mp_loaded", table)
        try:
            con.execute(
                "DELETE FROM loaded_files WHERE source_uri IN (SELECT source_uri FROM _mp_loaded)"
            )
            con.execute("INSERT INTO loaded_files BY NAME SELECT * FROM _mp_loaded")
        finally:
            con.unregister("_mp_loaded")

    def loaded_files(self, first: date, last: date) -> dict[str, tuple[int, str]]:
        if not os.path.exists(self.path):
            return {}
        with self.connect(read_only=True) as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'loaded_files'"
            ).fetchone()[0]
            if not exists:
                return {}
            rows = con.execute(
                "SELECT source_uri, size, coalesce(generation, '') "
                "FROM loaded_files WHERE archive_date BETWEEN $a AND $b",
                {"a": first, "b": last},
            ).fetchall()
        return {u: (int(n), g) for u, n, g in rows}

    @staticmethod
    def _insert_load_row(con, batch: LoadBatch, merged: dict[str, dict[str, int]]) -> None:
        per = load_counts(batch, merged)
        totals = {c: sum(p.get(c, 0) for p in per.values()) for c in COUNTERS}
        row = {
            "load_id": batch.load_id,
            "archive": batch.archive,
            "archive_date": batch.archive_date,
            "started_at": batch.started_at,
            "finished_at": datetime.now(timezone.utc),
            "status": batch.status,
            "runner": batch.runner or None,
            "files_read": batch.files_read,
            **totals,
            "per_provider": json.dumps(per, sort_keys=True),
            "files_skipped": batch.files_skipped,
            "first_date": batch.first_date,
        }
        names = [f.name for f in LOAD_FIELDS]
        con.execute(
            f"INSERT INTO loads ({', '.join(names)}) VALUES ({', '.join('$' + n for n in names)})",
            {n: row.get(n) for n in names},
        )

    # -- queries ------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        duck, p = _translated(sql, params)
        with self.connect(read_only=True) as con:
            try:
                return con.sql(duck, params=p or None).to_arrow_table()
            except duckdb.CatalogException as exc:
                raise WarehouseError(
                    f"{exc}; has anything been loaded into {self.path}? Run `mailpulse load` first"
                ) from exc

    def execute(self, duck_sql: str, params: dict[str, Any] | None = None) -> None:
        """Run DuckDB SQL as a writer (administrative use and tests)."""
        with self.connect() as con:
            con.execute(duck_sql, params or {})

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
        duck, p = _translated(sql, params)
        p["_mp_start"], p["_mp_end"] = start, end
        body = (
            f"SELECT * FROM ({duck}) AS _q "
            f'WHERE _q."{partition_column}" BETWEEN $_mp_start AND $_mp_end'
        )
        with self.connect() as con:
            self._create_tables(con)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS {body} LIMIT 0', p)
                con.execute(
                    f'DELETE FROM "{table}" WHERE "{partition_column}" '
                    "BETWEEN $_mp_start AND $_mp_end",
                    {"_mp_start": start, "_mp_end": end},
                )
                order = ", ".join(f'"{c}"' for c in (partition_column, *cluster_by))
                n = con.execute(
                    f'INSERT INTO "{table}" BY NAME {body} ORDER BY {order}', p
                ).fetchone()[0]
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
        return int(n)

    def replace_partitions_many(self, items: "list[PartitionReplacement]") -> list[int]:
        """Every item's DELETE + INSERT in one DuckDB transaction (one connection): a
        process killed before COMMIT leaves every table as it was."""
        plans = []
        for it in items:
            duck, p = _translated(it.sql, it.params)
            p["_mp_start"], p["_mp_end"] = it.start, it.end
            body = (
                f"SELECT * FROM ({duck}) AS _q "
                f'WHERE _q."{it.partition_column}" BETWEEN $_mp_start AND $_mp_end'
            )
            plans.append((it, body, p))
        written: list[int] = []
        with self.connect() as con:
            self._create_tables(con)
            con.execute("BEGIN TRANSACTION")
            try:
                for it, body, p in plans:
                    t, pc = it.table, it.partition_column
                    con.execute(f'CREATE TABLE IF NOT EXISTS "{t}" AS {body} LIMIT 0', p)
                    con.execute(
                        f'DELETE FROM "{t}" WHERE "{pc}" BETWEEN $_mp_start AND $_mp_end',
                        {"_mp_start": it.start, "_mp_end": it.end},
                    )
                    order = ", ".join(f'"{c}"' for c in (pc, *it.cluster_by))
                    n = con.execute(
                        f'INSERT INTO "{t}" BY NAME {body} ORDER BY {order}', p
                    ).fetchone()[0]
                    written.append(int(n))
                    log.info("%s %s..%s: %d rows (not committed yet)", t, it.start, it.end, n)
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
        return written
