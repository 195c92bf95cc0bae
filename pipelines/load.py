"""The Beam load job: one archive day -> staged Parquet -> one atomic warehouse commit.

Graph (``build_pipeline``)::

    ListArchiveFiles -> Reshuffle -> ReadArchives (file -> line chunks)
      -> NormalizeRecords (chunk -> Arrow events + dead letters + counts)
      -> DropDuplicates (by event_id within the chunk)
      -> WriteStaging (one Parquet file per chunk, plus its counts)

Each element is a file chunk, not a line: per-element Beam overhead is paid once per
few thousand records, and memory stays bounded by one chunk. Staged file names are
deterministic per (file, chunk), so a retried bundle rewrites the same files and the
counts stay exact. Nothing touches the warehouse until the pipeline has finished; then
:func:`run_load` hands the staged files to ``Warehouse.commit_load``, which removes
duplicates across chunks and across loads (by ``event_id``) in one transaction. A load
killed at any moment leaves the warehouse as it was; a rerun completes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from .events import (DEAD_LETTER_SCHEMA, EVENT_SCHEMA, dead_letters_to_arrow, events_to_arrow)
from .hashing import EmailHasher
from .normalizers import (NormalizeContext, normalize_record, sendgrid, sendgrid_columnar,
                          vectorized)
from .normalizers.base import redacted_preview
from .records import (DEFAULT_MAX_RECORD_BYTES, SkippedRecord,  # noqa: F401 (split_chunks)
                      iter_records, read_blocks, read_chunks, split_chunks)
from .sources import (ARCHIVE_SUFFIXES, PROVIDERS, ArchiveFile, Listing, Source,  # noqa: F401
                      archive_sources, explain_empty, list_days)
from .warehouse import COUNTERS, LoadBatch, open_warehouse
from .warehouse.base import load_counts

log = logging.getLogger(__name__)

PROVIDER_DIRS = PROVIDERS
#: Records per chunk: large enough to amortise Beam's per-element cost, small enough
#: to keep memory flat.
DEFAULT_CHUNK_LINES = 5_000
#: Beam's DirectRunner first tries Prism, which downloads a binary (not possible offline)
#: before falling back; naming the in-process FnApiRunner skips that attempt.
RUNNER_ALIASES = {"directrunner": "FnApiRunner", "direct": "FnApiRunner"}


@dataclass(frozen=True)
class NormalizeConfig:
    """What the normalizers need on a worker (picklable; the key stays inside the hasher)."""

    hasher: EmailHasher
    ses_category_tag: str = "category"
    cmc_timezone: str = "Asia/Tokyo"
    cmc_category_field: str | None = None
    #: A record longer than this becomes a dead letter without being read whole or parsed
    #: (``--max-record-bytes``; default: the collector's body limit).
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    def context(self, source_uri: str, ingested_at: datetime) -> NormalizeContext:
        return NormalizeContext(hasher=self.hasher, source_uri=source_uri,
                                ingested_at=ingested_at,
                                ses_category_tag=self.ses_category_tag,
                                cmc_timezone=self.cmc_timezone,
                                cmc_category_field=self.cmc_category_field)


#: ``load`` without ``--date`` reads the new files of this many archive days, ending today.
DEFAULT_DAYS = 4


@dataclass
class LoadReport:
    load_id: str
    archive: str
    archive_date: date
    warehouse: str
    runner: str
    files_read: int
    per_provider: dict[str, dict[str, int]]
    seconds: float
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    files_skipped: int = 0
    first_date: date | None = None
    #: ``succeeded``; ``up_to_date`` (files found, all loaded before); ``empty`` (no file)
    status: str = "succeeded"
    message: str = ""
    #: newest last-modified time among the files found (for the lag of ``--follow``)
    newest_file_at: datetime | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {c: sum(p.get(c, 0) for p in self.per_provider.values()) for c in COUNTERS}

    @property
    def empty(self) -> bool:
        return self.status == "empty"

    def adds_up(self) -> bool:
        for counts in [*self.per_provider.values(), self.totals]:
            rhs = sum(counts.get(c, 0) for c in COUNTERS if c != "records_read")
            if counts.get("records_read", 0) != rhs:
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "load_id": self.load_id, "archive": self.archive,
            "date": self.archive_date.isoformat(),
            "first_date": (self.first_date or self.archive_date).isoformat(),
            "warehouse": self.warehouse, "runner": self.runner, "status": self.status,
            "files_read": self.files_read, "files_skipped": self.files_skipped, **t,
            "events_per_second": round(t["records_read"] / self.seconds, 1) if self.seconds else None,
            "seconds": round(self.seconds, 3), "per_provider": self.per_provider,
            "adds_up": self.adds_up(), "sources": self.sources,
            **({"message": self.message} if self.message else {}),
        }


# -- archive layout: see pipelines/sources.py --------------------------------------------

def list_archive_files(archive: str, day: date, with_sizes: bool = False):
    """Archive files of one day in the mailpulse layout, sorted (a convenience for
    scripts; loads list through :mod:`pipelines.sources`)."""
    files = list_days(archive_sources(archive), [day]).files
    return [(f.uri, f.size) for f in files] if with_sizes else [f.uri for f in files]


#: Above this many archive bytes (compressed) a local load runs Beam workers in several
#: processes, one per core (up to 4): normalization is CPU-bound Python. Smaller loads
#: stay in one process, where starting workers would cost more than it saves.
PARALLEL_LOCAL_BYTES = 16 * 1024 * 1024


def local_parallelism(runner_name: str, beam_args: list[str], archive_bytes: int,
                      cpus: int | None = None) -> list[str]:
    """Extra Beam flags for the in-process runner on a multi-core machine (none when the
    user chose the worker flags or another runner)."""
    import os
    cpus = cpus or os.cpu_count() or 1
    if (runner_name != "FnApiRunner" or cpus < 2 or archive_bytes < PARALLEL_LOCAL_BYTES
            or any(a.startswith(("--direct_num_workers", "--direct_running_mode"))
                   for a in beam_args)):
        return []
    return ["--direct_num_workers", str(min(cpus, 4)),
            "--direct_running_mode", "multi_processing"]


# -- transforms -------------------------------------------------------------------------

class ListArchiveFiles(beam.PTransform):
    """The archive files this load reads, spread across workers.

    The driver lists each source and day once (``pipelines.sources.list_days``) and
    leaves out what the ``loaded_files`` manifest already holds, so the graph starts
    from that list; ``Reshuffle`` spreads the files over the workers.
    """

    def __init__(self, files: Iterable[ArchiveFile]):
        super().__init__()
        self.files = list(files)

    def expand(self, pbegin):
        return (pbegin
                | "FileList" >> beam.Create(self.files)
                | "SpreadFiles" >> beam.Reshuffle())


class ReadChunksFn(beam.DoFn):
    """ArchiveFile -> (uri, provider, chunk index, first line, bytes, archive day)."""

    def __init__(self, chunk_lines: int, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
        self.chunk_lines = chunk_lines
        self.max_record_bytes = max_record_bytes

    def process(self, f: ArchiveFile):
        # Streamed: decompressed as read (gzip told by the bytes), cut on record
        # boundaries; a record over the limit is skipped, never held (records.read_chunks).
        uri, provider, day = f.uri, f.provider, f.day
        limit = getattr(self, "max_record_bytes", None) or DEFAULT_MAX_RECORD_BYTES
        count, next_line = 0, 1
        with FileSystems.open(uri, compression_type="uncompressed") as fh:
            blocks = read_blocks(fh)
            for line, chunk in read_chunks(blocks, self.chunk_lines, limit):
                yield uri, provider, count, line, chunk, day
                count += 1
                if isinstance(chunk, SkippedRecord):
                    next_line = line + 1
                else:
                    next_line = line + chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        if blocks.problem is not None:  # corrupt or truncated gzip: the rest is unreadable
            yield uri, provider, count, next_line, SkippedRecord(None, b"", blocks.problem), day


class ReadArchives(beam.PTransform):
    """Archive files -> line chunks (the provider comes from the file's source)."""

    def __init__(self, chunk_lines: int = DEFAULT_CHUNK_LINES,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
        super().__init__()
        self.chunk_lines = chunk_lines
        self.max_record_bytes = max_record_bytes

    def expand(self, files):
        return files | "ReadChunks" >> beam.ParDo(
            ReadChunksFn(self.chunk_lines, self.max_record_bytes))


@dataclass
class NormalizedChunk:
    uri: str
    chunk_index: int
    events: pa.Table
    dead_letters: pa.Table
    stats: dict[str, dict[str, int]]
    is_first_chunk: bool


class NormalizeChunkFn(beam.DoFn):
    def __init__(self, config: NormalizeConfig, load_id: str, ingested_at: datetime):
        self.config = config
        self.load_id, self.ingested_at = load_id, ingested_at

    def process(self, element):
        uri, dir_provider, index, first_line, chunk, archive_day = element
        ctx = self.config.context(uri, self.ingested_at)
        acc = _ChunkAccumulator(uri, dir_provider, archive_day, self.load_id,
                                self.ingested_at)
        # SendGrid POST bodies (JSON arrays) take the columnar fast path item by item;
        # everything else, and every item the fast path rejects, the exact path.
        fast_items: list[dict] = []
        fast_pos: list[tuple[int, int]] = []
        # Records in their provider's clean shape take the vectorized path
        # (normalizers/vectorized.py); every record it leaves, the loop below, as before.
        # (a record skipped for its size is only a preview: the exact path records it)
        vec = (vectorized.normalize_chunk(chunk, ctx) if isinstance(chunk, bytes)
               else vectorized.FastResult(EVENT_SCHEMA.empty_table(), {},
                                          list(iter_records(chunk))))
        for prov, n in vec.counts.items():
            acc.count(prov, records_read=n, events_normalized=n)
        for rec in vec.residual:
            line = rec.line + first_line - 1
            if rec.error is None and type(rec.doc) is list and rec.doc:
                for i, item in enumerate(rec.doc):
                    if type(item) is dict:
                        fast_items.append(item)
                        fast_pos.append((line, i))
                    else:
                        acc.add(sendgrid.normalize_item(item, ctx, i), line)
            else:
                acc.add(normalize_record(rec._replace(line=line), ctx), line)
        table, rejected = sendgrid_columnar.normalize_items(fast_items, ctx)
        if table.num_rows:
            acc.count("sendgrid", records_read=table.num_rows, events_normalized=table.num_rows)
        for j in rejected:
            line, i = fast_pos[j]
            acc.add(sendgrid.normalize_item(fast_items[j], ctx, i), line)
        if vec.events.num_rows:
            table = pa.concat_tables([vec.events, table]) if table.num_rows else vec.events
        yield NormalizedChunk(uri, index, acc.events_table(table), acc.dead_letters_table(),
                              acc.stats, index == 0)


class _ChunkAccumulator:
    """Events, dead letters and per-provider counts of one chunk."""

    def __init__(self, uri, dir_provider, archive_date, load_id, ingested_at):
        self.uri, self.dir_provider, self.archive_date = uri, dir_provider, archive_date
        self.load_id, self.ingested_at = load_id, ingested_at
        self.events: list[dict] = []
        self.dead: list[dict] = []
        self.stats: dict[str, dict[str, int]] = {}

    def count(self, provider: str, **counts: int) -> None:
        s = self.stats.setdefault(provider, {"records_read": 0, "events_normalized": 0,
                                             "dead_letters": 0, "records_without_event": 0})
        for k, v in counts.items():
            s[k] += v

    def add(self, res, line: int) -> None:
        # Count under the provider the record turned out to be; records that could not
        # be told apart count under the archive directory's provider.
        prov = (res.events[0]["provider"] if res.events else
                next((d.provider for d in res.dead_letters if d.provider), None)
                ) or self.dir_provider or "unknown"
        self.count(prov, records_read=res.records, events_normalized=len(res.events),
                   dead_letters=len(res.dead_letters), records_without_event=res.without_event)
        self.events.extend(res.events)
        for dl in res.dead_letters:
            # Plain addresses never reach the warehouse: the stored copy of a dead letter
            # is a bounded preview with them redacted, plus the record's length
            # (source_uri + line point at the whole original in the archive).
            self.dead.append({"source_uri": self.uri, "line": line,
                              "record_index": dl.record_index,
                              "provider": dl.provider or self.dir_provider,
                              "reason": redacted_preview(dl.reason),
                              "raw": redacted_preview(dl.raw or ""), "raw_bytes": dl.raw_bytes,
                              "event_date": self.archive_date,
                              "load_id": self.load_id, "ingested_at": self.ingested_at})

    def events_table(self, fast: pa.Table) -> pa.Table:
        if not self.events:
            return fast
        slow = events_to_arrow(self.events)
        return pa.concat_tables([fast, slow]) if fast.num_rows else slow

    def dead_letters_table(self) -> pa.Table:
        return dead_letters_to_arrow(self.dead)


class NormalizeRecords(beam.PTransform):
    """Line chunks -> canonical events, dead letters and per-provider counts."""

    def __init__(self, config: NormalizeConfig, load_id: str, ingested_at: datetime):
        super().__init__()
        self.fn = NormalizeChunkFn(config, load_id, ingested_at)

    def expand(self, chunks):
        return chunks | "NormalizeChunks" >> beam.ParDo(self.fn)


def drop_duplicate_rows(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Keep the first row per event_id; count the dropped rows per provider."""
    if table.num_rows == 0 or pc.count_distinct(table["event_id"]).as_py() == table.num_rows:
        return table, {}  # the common case, at a third of the cost of the grouping below
    idx = pa.array(range(table.num_rows), pa.int64())
    firsts = (pa.table({"event_id": table["event_id"], "i": idx})
              .group_by("event_id", use_threads=False).aggregate([("i", "min")])["i_min"])
    if len(firsts) == table.num_rows:
        return table, {}
    keep = pc.is_in(idx, value_set=firsts)
    dropped = table.filter(pc.invert(keep))
    counts = dropped.group_by("provider").aggregate([("provider", "count")]).to_pylist()
    return table.filter(keep), {c["provider"]: c["provider_count"] for c in counts}


class DropDuplicatesFn(beam.DoFn):
    def process(self, chunk: NormalizedChunk):
        table, dropped = drop_duplicate_rows(chunk.events)
        for prov, n in dropped.items():
            chunk.stats.setdefault(prov, {})
            chunk.stats[prov]["duplicates_in_batch"] = (
                chunk.stats[prov].get("duplicates_in_batch", 0) + n)
        chunk.events = table
        yield chunk


class DropDuplicates(beam.PTransform):
    """Removes repeated event_ids within each chunk (provider retries sent in one file).

    Duplicates across chunks, files and earlier loads are removed by the warehouse
    commit, which sees the whole batch and the stored events in one transaction.
    """

    def expand(self, chunks):
        return chunks | "DropChunkDuplicates" >> beam.ParDo(DropDuplicatesFn())


def staged_name(uri: str, chunk_index: int) -> str:
    return f"{hashlib.sha1(uri.encode('utf-8')).hexdigest()[:16]}-{chunk_index:05d}"


class WriteStagingFn(beam.DoFn):
    """Writes a chunk's events and dead letters as Parquet and its counts as JSON."""

    def __init__(self, staging: str):
        self.staging = staging

    def process(self, chunk: NormalizedChunk):
        name = staged_name(chunk.uri, chunk.chunk_index)
        if chunk.events.num_rows:
            _write_parquet(chunk.events, FileSystems.join(self.staging, "events", name + ".parquet"))
        if chunk.dead_letters.num_rows:
            _write_parquet(chunk.dead_letters,
                           FileSystems.join(self.staging, "dead_letters", name + ".parquet"))
        stats = {"uri": chunk.uri, "chunk": chunk.chunk_index, "first": chunk.is_first_chunk,
                 "events": chunk.events.num_rows, "stats": chunk.stats}
        # The counts file is written last: its presence means the chunk is staged.
        _write_bytes(json.dumps(stats).encode(), FileSystems.join(self.staging, "stats", name + ".json"))
        yield name


class WriteStaging(beam.PTransform):
    def __init__(self, staging: str):
        super().__init__()
        self.staging = staging

    def expand(self, chunks):
        return chunks | "WriteChunkFiles" >> beam.ParDo(WriteStagingFn(self.staging))


def _write_bytes(data: bytes, path: str) -> None:
    tmp = path + ".tmp-" + uuid.uuid4().hex[:8]
    with FileSystems.create(tmp) as fh:
        fh.write(data)
    FileSystems.rename([tmp], [path])


def _write_parquet(table: pa.Table, path: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    _write_bytes(sink.getvalue().to_pybytes(), path)


def build_pipeline(pipeline: beam.Pipeline, *, files: Iterable[ArchiveFile], staging: str,
                   config: NormalizeConfig, load_id: str, ingested_at: datetime,
                   chunk_lines: int = DEFAULT_CHUNK_LINES):
    """Builds the load graph on ``pipeline`` (does not run it); returns the staged names."""
    return (pipeline
            | "ListArchiveFiles" >> ListArchiveFiles(files)
            | "ReadArchives" >> ReadArchives(chunk_lines, config.max_record_bytes)
            | "NormalizeRecords" >> NormalizeRecords(config, load_id, ingested_at)
            | "DropDuplicates" >> DropDuplicates()
            | "WriteStaging" >> WriteStaging(staging))


# -- running a load ---------------------------------------------------------------------

def resolve_runner(name: str) -> str:
    return RUNNER_ALIASES.get(name.strip().lower(), name.strip())


def default_staging(warehouse, options: PipelineOptions) -> str:
    """Local warehouses stage beside their file; otherwise under Beam's temp_location."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    temp = options.view_as(GoogleCloudOptions).temp_location
    if temp:
        return temp.rstrip("/") + "/mailpulse-staging"
    path = getattr(warehouse, "path", None)
    if path:
        return posixpath.join(posixpath.dirname(path), ".staging")
    from .warehouse import WarehouseError
    raise WarehouseError("no staging location for this warehouse: pass --staging URI (a "
                         "local directory, or gs://BUCKET/path for BigQuery and Dataflow) or "
                         "--temp_location gs://BUCKET/tmp")


@dataclass
class Staged:
    """What the pipeline staged: files to commit, counts per provider and per file."""

    event_files: list[str]
    dead_letter_files: list[str]
    stats: dict[str, dict[str, int]]
    #: per source file: (records read, events normalized)
    per_file: dict[str, tuple[int, int]]


def collect_staged(stage: str) -> Staged:
    """The staged files and counts of a finished pipeline."""
    totals: dict[str, dict[str, int]] = {}
    per_file: dict[str, list[int]] = {}
    for path in _match(FileSystems.join(stage, "stats", "*.json")):
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            doc = json.loads(fh.read())
        f = per_file.setdefault(doc["uri"], [0, 0])
        f[1] += doc["events"]
        for prov, counts in doc["stats"].items():
            f[0] += counts.get("records_read", 0)
            t = totals.setdefault(prov, {})
            for k, v in counts.items():
                t[k] = t.get(k, 0) + v
    return Staged(_match(FileSystems.join(stage, "events", "*.parquet")),
                  _match(FileSystems.join(stage, "dead_letters", "*.parquet")), totals,
                  {u: (r, e) for u, (r, e) in per_file.items()})


def _match(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


class Progress:
    """Files and events staged so far, read from the staging area (runner-agnostic)."""

    def __init__(self, stage: str, total_files: int, stream=None, interval: float = 1.0):
        self.stage, self.total_files, self.interval = stage, total_files, interval
        self.stream = stream if stream is not None else sys.stderr
        self._seen: dict[str, tuple[bool, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self._tick()
        self.stream.write("\n")
        self.stream.flush()

    def _run(self):
        while not self._stop.wait(self.interval):
            self._tick()

    def _tick(self):
        try:
            for path in _match(FileSystems.join(self.stage, "stats", "*.json")):
                if path not in self._seen:
                    with FileSystems.open(path, compression_type="uncompressed") as fh:
                        doc = json.loads(fh.read())
                    self._seen[path] = (doc["first"], doc["events"])
        except (OSError, ValueError):
            return  # the staging area is being written; next tick
        files = sum(1 for first, _ in self._seen.values() if first)
        events = sum(n for _, n in self._seen.values())
        secs = max(time.monotonic() - self._t0, 1e-6)
        self.stream.write(f"\rloading: {files}/{self.total_files} files, {events:,} events "
                          f"staged, {events / secs:,.0f} events/s   ")
        self.stream.flush()


def load_days(archive_date: date | None, days: int = DEFAULT_DAYS,
              today: date | None = None) -> list[date]:
    """The archive days a load looks at: ``--date D`` alone, else the last ``days`` days
    ending today (UTC), oldest first."""
    if archive_date is not None:
        return [archive_date]
    if days < 1:
        raise ValueError("--days must be at least 1")
    today = today or datetime.now(timezone.utc).date()
    return [today - timedelta(days=i) for i in range(days - 1, -1, -1)]


def files_to_read(listing: Listing, manifest: dict[str, tuple[int, str]],
                  full: bool = False) -> tuple[list[ArchiveFile], int]:
    """(files to read, files skipped): a file is skipped when the manifest holds it with
    the same size and generation; a grown or rewritten file is read again."""
    if full:
        return list(listing.files), 0
    todo = [f for f in listing.files
            if manifest.get(f.uri) != (f.size, f.generation)]
    return todo, len(listing.files) - len(todo)


def run_load(archive: str | None, archive_date: date | None, warehouse, *,
             config: NormalizeConfig, sources: Iterable[Source] | None = None,
             days: int = DEFAULT_DAYS, full: bool = False, runner: str = "DirectRunner",
             staging: str | None = None, beam_args: Iterable[str] = (),
             chunk_lines: int = DEFAULT_CHUNK_LINES, progress: bool = False,
             record_idle: bool = True, today: date | None = None) -> LoadReport:
    """Load the archive files not loaded yet into ``warehouse`` (a URI or a Warehouse).

    ``archive`` (the mailpulse layout) and/or ``sources`` say where to read;
    ``archive_date`` one day, or ``None`` for the last ``days`` days. Files already in the
    ``loaded_files`` manifest with the same size and generation are skipped unless
    ``full``. Everything read is committed in one transaction with the manifest rows.
    ``record_idle=False`` writes nothing when there is nothing new (``--follow``).
    """
    from . import storage
    t0 = time.monotonic()
    srcs = list(sources or []) + (archive_sources(archive) if archive else [])
    if not srcs:
        raise ValueError("run_load needs an archive or at least one source")
    beam_args = list(beam_args)
    storage.configure([s.root for s in srcs], beam_args)
    wh = open_warehouse(warehouse)
    runner_name = resolve_runner(runner)
    window = load_days(archive_date, days, today)
    listing = list_days(srcs, window)
    manifest = {} if full else wh.loaded_files(window[0], window[-1])
    files, skipped = files_to_read(listing, manifest, full)
    beam_args += local_parallelism(runner_name, beam_args, sum(f.size for f in files))
    options = PipelineOptions(beam_args, runner=runner_name)
    options.view_as(SetupOptions).save_main_session = False
    started_at = datetime.now(timezone.utc)
    load_id = f"{window[-1]:%Y%m%d}-{started_at:%H%M%S}-{uuid.uuid4().hex[:8]}"
    label = sources_label(srcs)
    status = "succeeded" if files else ("up_to_date" if listing.files else "empty")
    message = explain_empty(listing, srcs, window) if status == "empty" else ""
    if message:
        log.info("%s", message)
    newest = max((float(f.generation) for f in listing.files if f.generation), default=None)
    report = LoadReport(load_id=load_id, archive=label, archive_date=window[-1],
                        warehouse=wh.uri, runner=runner_name, files_read=len(files),
                        per_provider={}, seconds=0.0, started_at=started_at,
                        files_skipped=skipped, first_date=window[0], status=status,
                        message=message, sources=[s.spec for s in srcs],
                        newest_file_at=(datetime.fromtimestamp(newest, tz=timezone.utc)
                                        if newest else None))
    if not files and not record_idle:
        report.seconds = time.monotonic() - t0
        return report
    staging_root = staging or default_staging(wh, options)
    stage = FileSystems.join(staging_root, load_id)
    remove_stale_staging(staging_root)
    try:
        staged = Staged([], [], {}, {})
        if files:
            pipeline = beam.Pipeline(options=options)
            build_pipeline(pipeline, files=files, staging=stage, config=config,
                           load_id=load_id, ingested_at=started_at, chunk_lines=chunk_lines)
            with (Progress(stage, len(files)) if progress else _NoProgress()):
                state = pipeline.run().wait_until_finish()
            if not _finished(state):
                raise RuntimeError(f"load pipeline ended in state {state}; nothing was committed")
            staged = collect_staged(stage)
        batch = LoadBatch(load_id=load_id, archive=label, archive_date=window[-1],
                          started_at=started_at, event_files=staged.event_files,
                          dead_letter_files=staged.dead_letter_files, stats=staged.stats,
                          files_read=len(files), runner=runner_name,
                          files=manifest_rows(files, staged.per_file, load_id),
                          files_skipped=skipped, first_date=window[0],
                          status="empty" if status == "empty" else "succeeded")
        wh.ensure_schema()
        merged = wh.commit_load(batch)
    finally:
        _remove_tree(stage)
    report.per_provider = load_counts(batch, merged.per_provider)
    report.seconds = time.monotonic() - t0
    return report


def sources_label(srcs: list[Source]) -> str:
    """How a load names what it read: an archive root for the three providers of the
    mailpulse layout, else each source's PROVIDER=URI."""
    parts, used = [], set()
    for s in srcs:
        root = s.root.rsplit("/", 1)[0]
        trio = archive_sources(root)
        if s.layout == "hourly" and s.root == f"{root}/{s.provider}" and all(
                t in srcs for t in trio):
            if root not in used:
                used.add(root)
                parts.append(root)
        else:
            parts.append(s.spec)
    return " ".join(parts)


def manifest_rows(files: list[ArchiveFile], per_file: dict[str, tuple[int, int]],
                  load_id: str) -> list[dict[str, Any]]:
    """``loaded_files`` rows for the files a load read (loaded_at is set at commit)."""
    return [{"source_uri": f.uri, "provider": f.provider, "archive_date": f.day,
             "size": f.size, "generation": f.generation or None, "load_id": load_id,
             "records": per_file.get(f.uri, (0, 0))[0],
             "events": per_file.get(f.uri, (0, 0))[1]} for f in files]


def _finished(state) -> bool:
    """Whether a pipeline result state means success (``PipelineState`` or its name)."""
    from apache_beam.runners.runner import PipelineState
    if state is None:
        return True
    return state == PipelineState.DONE or str(state).upper().rsplit(".", 1)[-1] == "DONE"


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


#: A staging folder this old belongs to a load that was killed (loads take minutes);
#: younger ones may belong to a load still running, so they are left alone.
STALE_STAGING_SECONDS = 6 * 3600


def remove_stale_staging(staging_root: str, *, max_age: float = STALE_STAGING_SECONDS,
                         now: float | None = None) -> list[str]:
    """Remove what killed loads left in a local staging folder; returns what was removed.
    (Remote staging, gs:// or s3://, is left to the bucket's lifecycle rules.)"""
    import os
    import shutil
    if "://" in staging_root or not os.path.isdir(staging_root):
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in os.scandir(staging_root):
        if entry.is_dir(follow_symlinks=False) and now - entry.stat().st_mtime > max_age:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    if removed:
        log.info("removed %d staging folders left by killed loads", len(removed))
    return removed


def _remove_tree(path: str) -> None:
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as exc:  # noqa: BLE001 - cleanup must not mask the load's outcome
        log.warning("could not remove staging %s: %s", path, exc)
