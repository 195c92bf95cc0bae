"""Production: BigQuery, through google-cloud-bigquery.

``bigquery://PROJECT/DATASET`` (optionally ``?location=EU&maximum_bytes_billed=N``).

Tables
------
``events``
    DAY-partitioned on ``event_date`` with ``require_partition_filter``. ``event_date`` is
    the UTC date of ``event_ts`` and a DATE column of its own (not ingestion time, not
    ``TIMESTAMP_TRUNC(event_ts)``): every query the package runs names a day range
    (a load's event dates, an outcomes run's ``[start, end]``, the watcher's send window),
    the same column partitions DuckDB-side queries, and a DATE partition lets a late event
    (deferrals last up to 72 h) land in the day it happened, so replacing a derived day
    recomputes from exactly that partition. ``require_partition_filter`` turns a forgotten
    filter into an error instead of a full-table bill.

    Clustered by ``event_type, provider, message_id, email_hash``. BigQuery prunes blocks
    best on a prefix of the clustering columns, so the order goes from the filters nearly
    every query has to the most selective ones: the outcomes job and analysts filter or
    group on ``event_type`` (bounces, opens, deliveries) and ``provider``; the watcher
    looks up the events of one send (``message_id IN UNNEST(@ids)``, with the status
    event types); recipient-level questions (recipient_status, suppressions, "what
    happened to this address") filter on ``email_hash``. ``categories`` is an ARRAY and
    cannot cluster; ``event_id`` is only used by the load's MERGE, which reads
    ``event_id`` and ``event_date`` only.
``dead_letters``
    DAY-partitioned on ``event_date`` (the archive date), clustered by provider,
    source_uri; no required filter (small, browsed by operators).
``loads``
    One row per committed load; small, unpartitioned.
Derived tables (``replace_partitions``)
    DAY-partitioned on the given column, clustered by ``cluster_by``.

Loads
-----
:meth:`BigQueryWarehouse.commit_load` stages the batch's Parquet files with load jobs
(``load_table_from_file`` for local files, combined into one job; ``load_table_from_uri``
for ``gs://``) into per-load staging tables ``_mp_stage_*_<load id>`` (expiring after a
day), counts what is new with one parameterized query, stages the ``loads`` row the same
way, then runs ONE multi-statement transaction: MERGE the de-duplicated events (only ids
not present in the batch's event-date range), MERGE the dead letters by (source_uri, line,
record_index), MERGE the ``loads`` row by load_id, COMMIT. A crash anywhere before COMMIT
leaves nothing visible (BigQuery rolls an unfinished transaction back; staging tables are
private and expire); a rerun recreates the staging tables and completes; a rerun after
COMMIT adds nothing (every MERGE inserts only absent keys). No table is ever truncated.

The script takes no query parameters (production BigQuery accepts them in scripts, the
emulator does not): the date range comes from ``DECLARE`` over the staging table and every
value arrives as staged data, never as SQL text.

Beside this module: :mod:`.bq_params` types query parameters from Python values,
:mod:`.bq_emulator` holds the local emulator's comment workaround, and
:mod:`.partition_filters` is the linter that tests run over every query the package sends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from ..backoff import Backoff
from ..events import (
    DEAD_LETTER_FIELDS,
    EVENT_FIELDS,
    LOAD_FIELDS,
    LOAD_SCHEMA,
    LOADED_FILE_FIELDS,
    LOADED_FILE_SCHEMA,
    Field,
    bigquery_schema,
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
from .bq_emulator import is_loopback_http, strip_sql_comments
from .bq_params import query_parameters
from .partition_filters import (  # noqa: F401 (re-exported: callers import them from here)
    PartitionFilterError,
    assert_partition_filter,
    partition_filter_violations,
)

log = logging.getLogger(__name__)

ENDPOINT_ENV = "MAILPULSE_BIGQUERY_API_ENDPOINT"

EVENTS_PARTITION = "event_date"
#: See the module docstring for why these, in this order.
EVENTS_CLUSTERING = ("event_type", "provider", "message_id", "email_hash")
DEAD_LETTERS_CLUSTERING = ("provider", "source_uri")
STAGE_PREFIX = "_mp_stage_"
STAGE_EXPIRY = timedelta(days=1)
CONCURRENT_MARKER = "mailpulse: concurrent load"

_FIELDS = {
    "events": EVENT_FIELDS,
    "dead_letters": DEAD_LETTER_FIELDS,
    "loads": LOAD_FIELDS,
    "loaded_files": LOADED_FILE_FIELDS,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{2,62}$|^[a-z0-9-]+$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


#: How long to retry transient API errors (5xx, 429, dropped connections): 1 s doubling
#: to 32 s, for up to 10 minutes per call (named, overridable; tests pass a short one).
DEFAULT_API_RETRY = Backoff(initial=1.0, maximum=32.0, multiplier=2.0, deadline=600.0)
#: How long to wait for a query or load job.
DEFAULT_JOB_TIMEOUT = 3600.0
#: commit_load recounts and retries this often when another load changed ``events``
#: between counting and committing.
DEFAULT_COMMIT_ATTEMPTS = 3


def api_retry(policy: Backoff):
    """``policy`` as a ``google.api_core.retry.Retry`` for the client's calls, retrying
    what google-cloud-bigquery deems transient. ``initial``, ``maximum``, ``multiplier``
    and ``deadline`` map one to one (api_core adds its own jitter, so ``policy.jitter``
    is not used); ``attempts``, which api_core lacks, is counted in the predicate."""
    from google.api_core import retry as gretry
    from google.cloud.bigquery.retry import _should_retry

    predicate = _should_retry
    if policy.retries is not None:
        left = policy.retries

        def predicate(exc: BaseException) -> bool:
            nonlocal left
            if left <= 0 or not _should_retry(exc):
                return False
            left -= 1
            return True

    return gretry.Retry(
        predicate=predicate,
        initial=policy.initial,
        maximum=policy.maximum,
        multiplier=policy.multiplier,
        timeout=policy.deadline,
    )


def _quote(name: str) -> str:
    if not _NAME.match(name):
        raise WarehouseError(f"{name!r} is not a valid BigQuery table or column name")
    return f"`{name}`"


# -- the warehouse -------------------------------------------------------------------------
class BigQueryWarehouse(Warehouse):
    dialect = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        api_endpoint: str | None = None,
        location: str | None = None,
        maximum_bytes_billed: int | None = None,
        retry: Backoff = DEFAULT_API_RETRY,
        job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
        commit_attempts: int = DEFAULT_COMMIT_ATTEMPTS,
        client=None,
        before_commit: Callable[[], None] | None = None,
    ):
        if not project or not _PROJECT.match(project):
            raise WarehouseError(
                f"{project!r} is not a Google Cloud project id; use bigquery://PROJECT/DATASET"
            )
        if not dataset or not _DATASET.match(dataset):
            raise WarehouseError(
                f"{dataset!r} is not a BigQuery dataset name (letters, digits, "
                "underscores); use bigquery://PROJECT/DATASET"
            )
        self.project, self.dataset = project, dataset
        self.api_endpoint = api_endpoint or None
        self.location = location
        self.maximum_bytes_billed = maximum_bytes_billed
        self.retry = retry
        self.job_timeout = job_timeout
        self.commit_attempts = commit_attempts
        self.uri = f"bigquery://{project}/{dataset}"
        self._client = client
        self._schema_ready = False
        #: test hook: runs between counting and committing (to commit a concurrent load)
        self._before_commit = before_commit

    @classmethod
    def from_uri(
        cls, uri: str, *, api_endpoint: str | None = None, environ=None, **options: Any
    ) -> "BigQueryWarehouse":
        """``bigquery://PROJECT/DATASET[?location=L&maximum_bytes_billed=N]``. The API
        endpoint is read here, once, from ``MAILPULSE_BIGQUERY_API_ENDPOINT`` unless given."""
        parts = urlsplit(uri)
        project, dataset = parts.netloc, parts.path.strip("/")
        if not project or not dataset or "/" in dataset:
            raise WarehouseError(f"{uri!r}: use bigquery://PROJECT/DATASET")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(q) - {"location", "maximum_bytes_billed"}
        if unknown:
            raise WarehouseError(
                f"{uri!r}: unknown option(s) {sorted(unknown)}; "
                "known: location, maximum_bytes_billed"
            )
        if "location" in q:
            options.setdefault("location", q["location"])
        if "maximum_bytes_billed" in q:
            try:
                options.setdefault("maximum_bytes_billed", int(q["maximum_bytes_billed"]))
            except ValueError:
                raise WarehouseError(
                    f"{uri!r}: maximum_bytes_billed must be an integer number of bytes"
                ) from None
        if api_endpoint is None:
            api_endpoint = (os.environ if environ is None else environ).get(ENDPOINT_ENV) or None
        return cls(project, dataset, api_endpoint=api_endpoint, **options)

    def __repr__(self) -> str:
        where = f" via {self.api_endpoint}" if self.api_endpoint else ""
        return f"BigQueryWarehouse({self.project}.{self.dataset}{where})"

    # -- connection ---------------------------------------------------------------------
    def api_retry(self):
        """A fresh ``google.api_core`` Retry from :attr:`retry` (one per call: it counts
        the call's attempts)."""
        return api_retry(self.retry)

    @property
    def client(self):
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self):
        from google.cloud import bigquery

        kwargs: dict[str, Any] = {"project": self.project}
        if self.location:
            kwargs["location"] = self.location
        if self.api_endpoint:
            kwargs["client_options"] = {"api_endpoint": self.api_endpoint}
        if is_loopback_http(self.api_endpoint):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        else:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                kwargs["credentials"], _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            except DefaultCredentialsError as exc:
                raise WarehouseError(
                    f"no Google credentials for {self.uri}: run `gcloud auth "
                    "application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS to a "
                    f"service-account key file); to use a local emulator set {ENDPOINT_ENV}="
                    f"http://127.0.0.1:PORT. ({exc})"
                ) from None
        return bigquery.Client(**kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _table_id(self, name: str) -> str:
        _quote(name)
        return f"{self.project}.{self.dataset}.{name}"

    @contextlib.contextmanager
    def _errors(self, what: str):
        """Map API errors to errors that say what to do."""
        import requests
        from google.api_core import exceptions as gexc

        try:
            yield
        except WarehouseError:
            raise
        except gexc.NotFound as exc:
            msg = str(exc)
            if "Dataset" in msg or "dataset" in msg.split("Table")[0]:
                raise WarehouseError(self._missing_dataset_message() + f" ({msg})") from None
            raise WarehouseError(
                f"{what}: {msg}; has anything been loaded into {self.uri}? "
                "Run `mailpulse load --warehouse " + self.uri + "` first"
            ) from None
        except (gexc.Unauthorized, gexc.Forbidden) as exc:
            raise WarehouseError(
                f"{what}: {exc}; check that the account from `gcloud auth application-default "
                f"login` may use {self.project}.{self.dataset} (roles/bigquery.dataEditor and "
                "roles/bigquery.jobUser)"
            ) from None
        except (
            gexc.TooManyRequests,
            gexc.ServerError,
            gexc.RetryError,
            requests.ConnectionError,
            requests.Timeout,
        ) as exc:
            where = self.api_endpoint or "the BigQuery API"
            raise TransientWarehouseError(
                f"{what}: {where} did not answer ({exc}); retry later"
            ) from None
        except gexc.BadRequest as exc:
            raise WarehouseError(f"{what}: {exc}") from None

    def _missing_dataset_message(self) -> str:
        loc = f" --location={self.location}" if self.location else ""
        return (
            f"dataset {self.project}.{self.dataset} does not exist; create it with "
            f"`bq mk --dataset{loc} {self.project}:{self.dataset}`"
        )

    # -- jobs ---------------------------------------------------------------------------
    def _wire_sql(self, sql: str, params: dict[str, Any] | None) -> str:
        """The SQL text sent for a job: as written, except that a parameterized job sent to
        a local emulator goes without comments (see :func:`strip_sql_comments`)."""
        if params and is_loopback_http(self.api_endpoint):
            return strip_sql_comments(sql)
        return sql

    def _job_config(self, params: dict[str, Any] | None = None, **extra: Any):
        from google.cloud import bigquery

        cfg = bigquery.QueryJobConfig(
            default_dataset=f"{self.project}.{self.dataset}",
            query_parameters=query_parameters(params),
            use_legacy_sql=False,
            labels={"app": "mailpulse"},
            **extra,
        )
        if self.maximum_bytes_billed is not None:
            cfg.maximum_bytes_billed = self.maximum_bytes_billed
        return cfg

    def _run(
        self, sql: str, params: dict[str, Any] | None = None, what: str = "query", **extra: Any
    ):
        """Run one query job (or script) to completion; returns (job, row iterator)."""
        with self._errors(what):
            job = self.client.query(
                self._wire_sql(sql, params),
                job_config=self._job_config(params, **extra),
                location=self.location,
                retry=self.api_retry(),
                job_retry=None,
            )
            rows = job.result(retry=self.api_retry(), timeout=self.job_timeout)
        return job, rows

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        _, rows = self._run(sql, params)
        with self._errors("query"):
            return rows.to_arrow(create_bqstorage_client=False)

    def estimate_bytes(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Bytes the query would scan (a dry run; free). The emulator always says 0."""
        with self._errors("dry run"):
            job = self.client.query(
                self._wire_sql(sql, params),
                job_config=self._job_config(params, dry_run=True, use_query_cache=False),
                location=self.location,
                retry=self.api_retry(),
                job_retry=None,
            )
        return int(job.total_bytes_processed or 0)

    # -- schema -------------------------------------------------------------------------
    def _check_dataset(self) -> None:
        from google.api_core import exceptions as gexc

        with self._errors("checking the dataset"):
            try:
                self.client.get_dataset(f"{self.project}.{self.dataset}", retry=self.api_retry())
            except gexc.NotFound:
                raise WarehouseError(self._missing_dataset_message()) from None

    def _table(
        self,
        name: str,
        fields: Iterable[Field],
        *,
        partition: str | None = None,
        clustering: Iterable[str] = (),
        require_filter: bool = False,
        expires: datetime | None = None,
        description: str | None = None,
    ):
        from google.cloud import bigquery

        t = bigquery.Table(
            self._table_id(name),
            schema=[bigquery.SchemaField.from_api_repr(f) for f in bigquery_schema(fields)],
        )
        if partition:
            t.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=partition
            )
            if require_filter:
                t.require_partition_filter = True
        if clustering:
            t.clustering_fields = list(clustering)
        if expires:
            t.expires = expires
        if description:
            t.description = description
        t.labels = {"app": "mailpulse"}
        return t

    def table_definitions(self) -> list:
        """The ``events``, ``dead_letters`` and ``loads`` tables as created."""
        return [
            self._table(
                "events",
                EVENT_FIELDS,
                partition=EVENTS_PARTITION,
                clustering=EVENTS_CLUSTERING,
                require_filter=True,
                description="Canonical email events, one row per event_id",
            ),
            self._table(
                "dead_letters",
                DEAD_LETTER_FIELDS,
                partition="event_date",
                clustering=DEAD_LETTERS_CLUSTERING,
                description="Records that could not become events",
            ),
            self._table("loads", LOAD_FIELDS, description="One row per committed load"),
            self._table(
                "loaded_files",
                LOADED_FILE_FIELDS,
                partition="archive_date",
                clustering=("provider", "source_uri"),
                description="Manifest: archive objects already loaded",
            ),
        ]

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        self._check_dataset()
        with self._errors("creating tables"):
            for t in self.table_definitions():
                got = self.client.create_table(t, exists_ok=True, retry=self.api_retry())
                self._add_missing_columns(got, t)
        self._schema_ready = True

    def _add_missing_columns(self, existing, wanted) -> None:
        """A table made by an older version gains the nullable columns added since."""
        have = {f.name for f in existing.schema or []}
        extra = [f for f in wanted.schema if f.name not in have]
        if not extra or not have:
            return
        required = [f.name for f in extra if f.mode == "REQUIRED"]
        if required:
            raise WarehouseError(
                f"{wanted.table_id} lacks required columns {required}; it "
                "was made by another version of mailpulse"
            )
        existing.schema = list(existing.schema) + extra
        self.client.update_table(existing, ["schema"], retry=self.api_retry())

    def table_exists(self, name: str) -> bool:
        return self._get_table(name) is not None

    # -- load ---------------------------------------------------------------------------
    def loaded_files(self, first: date, last: date) -> dict[str, tuple[int, str]]:
        if self._get_table("loaded_files") is None:
            return {}
        _, rows = self._run(
            "SELECT source_uri, size, COALESCE(generation, '') AS g "
            "FROM loaded_files WHERE archive_date BETWEEN @a AND @b",
            {"a": first, "b": last},
            what="reading the loaded_files manifest",
        )
        return {u: (int(n), g) for u, n, g in rows}

    def _stage_name(self, kind: str, load_id: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_]", "_", load_id)[:200]
        return f"{STAGE_PREFIX}{kind}_{safe}"

    def _create_stage(self, name: str, fields) -> None:
        with self._errors("creating a staging table"):
            self.client.delete_table(
                self._table_id(name), not_found_ok=True, retry=self.api_retry()
            )
            self.client.create_table(
                self._table(
                    name,
                    fields,
                    expires=datetime.now(timezone.utc) + STAGE_EXPIRY,
                    description="mailpulse staging (per load; expires)",
                ),
                retry=self.api_retry(),
            )

    def _load_config(self, fields):
        from google.cloud import bigquery

        cfg = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
            schema=[bigquery.SchemaField.from_api_repr(f) for f in bigquery_schema(fields)],
            labels={"app": "mailpulse"},
        )
        # Parquet LIST columns (Arrow list<item>) load as REPEATED, not as a record.
        opts = bigquery.ParquetOptions()
        opts.enable_list_inference = True
        cfg.parquet_options = opts  # (the getter returns a copy: set it whole)
        return cfg

    def _stage_files(self, name: str, fields, files: list[str], schema: pa.Schema) -> None:
        """Load Parquet files into staging table ``name`` (created empty first)."""
        self._create_stage(name, fields)
        remote = [f for f in files if "://" in f]
        local = [f for f in files if "://" not in f]
        if remote:
            bad = [f for f in remote if not f.startswith("gs://")]
            if bad:
                raise WarehouseError(
                    f"BigQuery loads Parquet from gs:// or local files, not "
                    f"{bad[0]!r}; stage the load in a gs:// temp location"
                )
            with self._errors("loading staged files"):
                job = self.client.load_table_from_uri(
                    remote,
                    self._table_id(name),
                    job_config=self._load_config(fields),
                    location=self.location,
                    retry=self.api_retry(),
                )
                job.result(retry=self.api_retry(), timeout=self.job_timeout)
        if local:
            # One load job for all local files (BigQuery limits load jobs per table per day).
            with tempfile.TemporaryDirectory(prefix="mailpulse-bq-") as tmp:
                path = os.path.join(tmp, "stage.parquet")
                with pq.ParquetWriter(path, schema, compression="zstd") as w:
                    for f in local:
                        t = pq.read_table(f)
                        if t.num_rows:
                            w.write_table(t.select(schema.names).cast(schema))
                with open(path, "rb") as fh, self._errors("loading staged files"):
                    job = self.client.load_table_from_file(
                        fh,
                        self._table_id(name),
                        job_config=self._load_config(fields),
                        location=self.location,
                    )  # resumable upload (the emulator
                    # rejects the multipart one's content type)
                    job.result(retry=self.api_retry(), timeout=self.job_timeout)

    def _drop(self, name: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.client.delete_table(
                self._table_id(name), not_found_ok=True, retry=self.api_retry()
            )
        except gexc.GoogleAPIError as exc:  # it expires by itself
            log.warning("could not drop staging table %s (it expires in a day): %s", name, exc)

    def commit_load(self, batch: LoadBatch) -> CommitResult:
        from ..events import DEAD_LETTER_SCHEMA, EVENT_SCHEMA

        self.ensure_schema()
        ev, dl, ld, lf = (
            self._stage_name(k, batch.load_id) for k in ("events", "dead", "load", "files")
        )
        try:
            self._stage_files(ev, EVENT_FIELDS, batch.event_files, EVENT_SCHEMA)
            self._stage_files(dl, DEAD_LETTER_FIELDS, batch.dead_letter_files, DEAD_LETTER_SCHEMA)
            self._stage_rows(
                lf,
                LOADED_FILE_FIELDS,
                LOADED_FILE_SCHEMA,
                [{**r, "loaded_at": datetime.now(timezone.utc)} for r in batch.files],
            )
            for attempt in range(1, self.commit_attempts + 1):
                per = self._count_new_events(ev)
                for prov, n in self._count_new_dead_letters(dl).items():
                    per.setdefault(prov, {})["dead_letters_stored"] = n
                new_events = sum(p.get("events_loaded", 0) for p in per.values())
                self._stage_load_row(ld, batch, per)
                if self._before_commit is not None:
                    self._before_commit()
                try:
                    self._run(
                        self._commit_script(ev, dl, ld, lf, new_events), what="committing the load"
                    )
                except WarehouseError as exc:
                    if CONCURRENT_MARKER in str(exc) and attempt < self.commit_attempts:
                        log.warning(
                            "events changed while committing load %s; recounting", batch.load_id
                        )
                        continue
                    if CONCURRENT_MARKER in str(exc):
                        raise TransientWarehouseError(
                            f"another load kept changing the same events while load "
                            f"{batch.load_id} committed; nothing was stored, rerun it"
                        ) from None
                    raise
                return CommitResult(per_provider=per)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            for name in (ev, dl, ld, lf):
                self._drop(name)

    @staticmethod
    def _dedup(stage: str, key: str, order: str) -> str:
        return (
            f"SELECT * FROM {_quote(stage)} WHERE TRUE "
            f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {order}) = 1"
        )

    _EVENT_ORDER = "event_ts, source_uri NULLS LAST"
    _DEAD_KEY = "source_uri, line, record_index"

    def _count_new_events(self, stage: str) -> dict[str, dict[str, int]]:
        _, rows = self._run(
            f"SELECT MIN(event_date) AS lo, MAX(event_date) AS hi FROM {_quote(stage)}",
            what="counting staged events",
        )
        lo, hi = next(iter(rows))
        if lo is None:
            return {}
        sql = f"""
            WITH staged AS (
              SELECT provider, COUNT(*) AS n, COUNT(DISTINCT event_id) AS d
              FROM {_quote(stage)} GROUP BY provider),
            fresh AS (
              SELECT s.provider, COUNT(*) AS k
              FROM ({self._dedup(stage, "event_id", self._EVENT_ORDER)}) AS s
              WHERE NOT EXISTS (
                SELECT 1 FROM events AS e
                WHERE e.event_date BETWEEN @lo AND @hi AND e.event_id = s.event_id)
              GROUP BY s.provider)
            SELECT staged.provider, staged.n, staged.d, COALESCE(fresh.k, 0) AS k
            FROM staged LEFT JOIN fresh ON fresh.provider = staged.provider
        """
        _, rows = self._run(sql, {"lo": lo, "hi": hi}, what="counting new events")
        return {
            prov: {"events_loaded": k, "duplicates_in_batch": n - d, "already_loaded": d - k}
            for prov, n, d, k in rows
        }

    def _count_new_dead_letters(self, stage: str) -> dict[str, int]:
        sql = f"""
            SELECT COALESCE(i.provider, '') AS provider, COUNT(*) AS n
            FROM ({self._dedup(stage, self._DEAD_KEY, "load_id")}) AS i
            WHERE NOT EXISTS (
              SELECT 1 FROM dead_letters AS d
              WHERE d.source_uri = i.source_uri AND d.line = i.line
                AND d.record_index = i.record_index)
            GROUP BY 1
        """
        _, rows = self._run(sql, what="counting new dead letters")
        return {prov: n for prov, n in rows}

    def _stage_load_row(self, stage: str, batch: LoadBatch, merged) -> None:
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
        self._stage_rows(stage, LOAD_FIELDS, LOAD_SCHEMA, [row])

    def _stage_rows(self, stage: str, fields, schema: pa.Schema, rows: list[dict]) -> None:
        if not rows:
            self._create_stage(stage, fields)
            return
        table = pa.Table.from_pylist(rows, schema=schema)
        with tempfile.TemporaryDirectory(prefix="mailpulse-bq-") as tmp:
            path = os.path.join(tmp, "rows.parquet")
            pq.write_table(table, path)
            self._stage_files(stage, fields, [path], schema)

    def _commit_script(self, ev: str, dl: str, ld: str, lf: str, new_events: int) -> str:
        """One transaction; values only as staged data (the emulator takes no parameters
        in scripts). ``new_events`` is the count this process computed; if another load
        committed overlapping events since, the check fails and the transaction rolls back.
        """

        def cols(fields):
            return ", ".join(_quote(f.name) for f in fields)

        def vals(fields):
            return ", ".join(f"S.{_quote(f.name)}" for f in fields)

        def sets(fields):
            return ", ".join(
                f"{_quote(f.name)} = S.{_quote(f.name)}" for f in fields if f.name != "source_uri"
            )

        ev_new = (
            f"SELECT COUNT(*) FROM ({self._dedup(ev, 'event_id', self._EVENT_ORDER)}) AS s "
            "WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE e.event_date BETWEEN lo "
            "AND hi AND e.event_id = s.event_id)"
        )
        return f"""
DECLARE lo DATE DEFAULT (SELECT MIN(event_date) FROM {_quote(ev)});
DECLARE hi DATE DEFAULT (SELECT MAX(event_date) FROM {_quote(ev)});
BEGIN TRANSACTION;
SELECT IF(({ev_new}) = (SELECT events_loaded FROM {_quote(ld)}), 0,
          ERROR('{CONCURRENT_MARKER}: events changed since counting'));
MERGE events AS T
USING ({self._dedup(ev, "event_id", self._EVENT_ORDER)}) AS S
ON T.event_date BETWEEN lo AND hi AND T.event_id = S.event_id
WHEN NOT MATCHED THEN INSERT ({cols(EVENT_FIELDS)}) VALUES ({vals(EVENT_FIELDS)});
MERGE dead_letters AS T
USING ({self._dedup(dl, self._DEAD_KEY, "load_id")}) AS S
ON T.source_uri = S.source_uri AND T.line = S.line AND T.record_index = S.record_index
WHEN NOT MATCHED THEN INSERT ({cols(DEAD_LETTER_FIELDS)}) VALUES ({vals(DEAD_LETTER_FIELDS)});
MERGE loaded_files AS T
USING {_quote(lf)} AS S
ON T.source_uri = S.source_uri
WHEN MATCHED THEN UPDATE SET {sets(LOADED_FILE_FIELDS)}
WHEN NOT MATCHED THEN INSERT ({cols(LOADED_FILE_FIELDS)}) VALUES ({vals(LOADED_FILE_FIELDS)});
MERGE loads AS T
USING {_quote(ld)} AS S
ON T.load_id = S.load_id
WHEN NOT MATCHED THEN INSERT ({cols(LOAD_FIELDS)}) VALUES ({vals(LOAD_FIELDS)});
COMMIT TRANSACTION;
"""

    # -- derived tables -----------------------------------------------------------------
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
        """One MERGE (atomic): rows of ``table`` with ``partition_column`` in [start, end]
        are deleted and the query's rows in that range inserted; other rows untouched.
        Creates the table (DAY-partitioned on the column, clustered by ``cluster_by``)
        when missing. Returns the number of rows now in the range."""
        self.ensure_schema()
        pc = _quote(partition_column)
        p = dict(params or {})
        p["_mp_start"], p["_mp_end"] = start, end
        body = f"SELECT * FROM ({sql}) AS _q WHERE _q.{pc} BETWEEN @_mp_start AND @_mp_end"
        target = self._get_table(table)
        if target is None:
            target = self._create_derived(table, body, p, partition_column, cluster_by)
        names = [f.name for f in target.schema]
        cols = ", ".join(_quote(n) for n in names)
        merge = (
            f"MERGE {_quote(table)} AS T USING ({body}) AS S ON FALSE "
            f"WHEN NOT MATCHED BY SOURCE AND T.{pc} BETWEEN @_mp_start AND @_mp_end "
            "THEN DELETE "
            f"WHEN NOT MATCHED THEN INSERT ({cols}) "
            f"VALUES ({', '.join('S.' + _quote(n) for n in names)})"
        )
        self._run(merge, p, what=f"replacing {table} {start}..{end}")
        _, rows = self._run(
            f"SELECT COUNT(*) FROM {_quote(table)} WHERE {pc} BETWEEN @_mp_start AND @_mp_end",
            {"_mp_start": start, "_mp_end": end},
            what=f"counting {table}",
        )
        return int(next(iter(rows))[0])

    def replace_partitions_many(self, items: list["PartitionReplacement"]) -> list[int]:
        """All items in ONE multi-statement transaction: each query's rows are first
        staged (a parameterized INSERT into a private, expiring staging table), then one
        script DELETEs every item's range and INSERTs its staged rows, and COMMITs. A crash
        before COMMIT leaves every table as it was (BigQuery rolls the transaction back).

        The script takes no query parameters (the emulator accepts none in scripts): each
        item's range comes from a staged ranges table through DECLARE, as in commit_load.
        """
        from google.cloud import bigquery

        if not items:
            return []
        self.ensure_schema()
        run_id = uuid.uuid4().hex[:12]
        ranges = self._stage_name("ranges", run_id)
        stages: list[str] = []
        try:
            with self._errors("creating a staging table"):
                self.client.create_table(
                    self._plain_stage(
                        ranges,
                        [
                            bigquery.SchemaField("item", "INT64"),
                            bigquery.SchemaField("start_date", "DATE"),
                            bigquery.SchemaField("end_date", "DATE"),
                        ],
                    ),
                    retry=self.api_retry(),
                )
            targets = []
            for i, it in enumerate(items):
                pc = _quote(it.partition_column)
                p = dict(it.params or {})
                p["_mp_start"], p["_mp_end"] = it.start, it.end
                body = (
                    f"SELECT * FROM ({it.sql}) AS _q WHERE _q.{pc} BETWEEN @_mp_start AND @_mp_end"
                )
                target = self._get_table(it.table)
                if target is None:
                    target = self._create_derived(
                        it.table, body, p, it.partition_column, it.cluster_by
                    )
                names = [f.name for f in target.schema]
                cols = ", ".join(_quote(n) for n in names)
                stage = self._stage_name(f"derived{i}", run_id)
                stages.append(stage)
                with self._errors("creating a staging table"):
                    self.client.create_table(
                        self._plain_stage(stage, list(target.schema)), retry=self.api_retry()
                    )
                self._run(
                    f"INSERT INTO {_quote(stage)} ({cols}) SELECT {cols} FROM ({body}) AS S",
                    p,
                    what=f"computing {it.table} {it.start}..{it.end}",
                )
                self._run(
                    f"INSERT INTO {_quote(ranges)} (item, start_date, end_date) "
                    "VALUES (@item, @_mp_start, @_mp_end)",
                    {"item": i, "_mp_start": it.start, "_mp_end": it.end},
                    what="staging the ranges",
                )
                targets.append((it, stage, cols))
            declares, steps = [], []
            for i, (it, stage, cols) in enumerate(targets):
                pc = _quote(it.partition_column)
                declares.append(
                    f"DECLARE s{i} DATE DEFAULT (SELECT start_date FROM {_quote(ranges)} "
                    f"WHERE item = {i});\n"
                    f"DECLARE e{i} DATE DEFAULT (SELECT end_date FROM {_quote(ranges)} "
                    f"WHERE item = {i});"
                )
                steps.append(
                    f"DELETE FROM {_quote(it.table)} WHERE {pc} BETWEEN s{i} AND e{i};\n"
                    f"INSERT INTO {_quote(it.table)} ({cols}) "
                    f"SELECT {cols} FROM {_quote(stage)};"
                )
            script = (
                "\n".join(declares)
                + "\nBEGIN TRANSACTION;\n"
                + "\n".join(steps)
                + "\nCOMMIT TRANSACTION;\n"
            )
            self._run(script, what="replacing " + ", ".join(it.table for it in items))
            written = []
            for stage in stages:
                _, rows = self._run(
                    f"SELECT COUNT(*) FROM {_quote(stage)}", what="counting staged rows"
                )
                written.append(int(next(iter(rows))[0]))
            return written
        finally:
            for name in [ranges, *stages]:
                with contextlib.suppress(Exception):  # they expire anyway
                    self.client.delete_table(self._table_id(name), not_found_ok=True)

    def _plain_stage(self, name: str, schema: list):
        from google.cloud import bigquery

        t = bigquery.Table(self._table_id(name), schema=schema)
        t.expires = datetime.now(timezone.utc) + STAGE_EXPIRY
        t.labels = {"app": "mailpulse"}
        t.description = "mailpulse staging (outcomes; expires)"
        return t

    def _get_table(self, name: str):
        from google.api_core import exceptions as gexc

        with self._errors(f"looking up {name}"):
            try:
                return self.client.get_table(self._table_id(name), retry=self.api_retry())
            except gexc.NotFound:
                return None

    def _create_derived(
        self, table: str, body: str, params, partition_column: str, cluster_by: tuple[str, ...]
    ):
        from google.cloud import bigquery

        # A dry run gives the result schema without scanning (free in production).
        with self._errors(f"planning {table}"):
            job = self.client.query(
                self._wire_sql(body, params),
                job_config=self._job_config(params, dry_run=True, use_query_cache=False),
                location=self.location,
                retry=self.api_retry(),
                job_retry=None,
            )
        schema = list(job.schema or [])
        if partition_column not in {f.name for f in schema}:
            raise WarehouseError(
                f"the query for {table} returns no column {partition_column!r} "
                "to partition by; select it (queries keep the partition "
                "column in the output)"
            )
        t = bigquery.Table(self._table_id(table), schema=schema)
        t.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=partition_column
        )
        if cluster_by:
            if len(cluster_by) > 4:
                raise WarehouseError(
                    f"{table}: BigQuery clusters by at most 4 columns, got {list(cluster_by)}"
                )
            t.clustering_fields = list(cluster_by)
        t.labels = {"app": "mailpulse"}
        with self._errors(f"creating {table}"):
            return self.client.create_table(t, exists_ok=True, retry=self.api_retry())
