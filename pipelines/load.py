"""The load run: one archive day -> staged Parquet -> one atomic warehouse commit.

:func:`run_load` lists the sources once, leaves out what the ``loaded_files`` manifest
holds, runs the Beam graph of :mod:`pipelines.load_transforms` (``build_pipeline``; its
names are re-exported here), collects what it staged and commits it. Nothing touches the
warehouse until the pipeline has finished; then :func:`run_load` hands the staged files
to ``Warehouse.commit_load``, which removes duplicates across chunks and across loads
(by ``event_id``) in one transaction. A load killed at any moment leaves the warehouse as
it was; a rerun completes it. Also here: the report (:class:`LoadReport`), the staging
collection, the progress line and the clean-up of what killed loads left.
"""

from __future__ import annotations

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
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from .beam_worker import Zygote
from .load_transforms import (  # noqa: F401 (the graph: re-exported, callers import it from here)
    DEFAULT_CHUNK_LINES,
    DropDuplicates,
    DropDuplicatesFn,
    ListArchiveFiles,
    NormalizeChunkFn,
    NormalizedChunk,
    NormalizeRecords,
    ReadArchives,
    ReadChunksFn,
    WriteStaging,
    WriteStagingFn,
    build_pipeline,
    drop_duplicate_rows,
    staged_name,
)
from .normalizers.base import NormalizeSettings  # noqa: F401 (re-exported)
from .records import (  # noqa: F401 (split_chunks)
    DEFAULT_MAX_RECORD_BYTES,
    SkippedRecord,
    iter_records,
    read_blocks,
    read_chunks,
    split_chunks,
)
from .settings import DEFAULT_DAYS
from .sources import (  # noqa: F401
    ARCHIVE_SUFFIXES,
    PROVIDERS,
    ArchiveFile,
    Listing,
    Source,
    archive_sources,
    explain_empty,
    list_days,
)
from .warehouse import COUNTERS, LoadBatch, open_warehouse
from .warehouse.base import load_counts

log = logging.getLogger(__name__)

PROVIDER_DIRS = PROVIDERS
#: Beam's DirectRunner first tries Prism, which downloads a binary (not possible offline)
#: before falling back; naming the in-process FnApiRunner skips that attempt.
RUNNER_ALIASES = {"directrunner": "FnApiRunner", "direct": "FnApiRunner"}


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
            "load_id": self.load_id,
            "archive": self.archive,
            "date": self.archive_date.isoformat(),
            "first_date": (self.first_date or self.archive_date).isoformat(),
            "warehouse": self.warehouse,
            "runner": self.runner,
            "status": self.status,
            "files_read": self.files_read,
            "files_skipped": self.files_skipped,
            **t,
            "events_per_second": round(t["records_read"] / self.seconds, 1)
            if self.seconds
            else None,
            "seconds": round(self.seconds, 3),
            "per_provider": self.per_provider,
            "adds_up": self.adds_up(),
            "sources": self.sources,
            **({"message": self.message} if self.message else {}),
        }


# -- archive layout: see pipelines/sources.py --------------------------------------------


#: Above this many archive bytes (compressed) a local load runs Beam workers in several
#: processes, one per core (up to 4): normalization is CPU-bound Python. Smaller loads
#: stay in one process, where starting workers would cost more than it saves.
PARALLEL_LOCAL_BYTES = 16 * 1024 * 1024


def local_parallelism(
    runner_name: str, beam_args: list[str], archive_bytes: int, cpus: int | None = None
) -> list[str]:
    """Extra Beam flags for the in-process runner on a multi-core machine (none when the
    user chose the worker flags or another runner)."""
    import os

    cpus = cpus or os.cpu_count() or 1
    if (
        runner_name != "FnApiRunner"
        or cpus < 2
        or archive_bytes < PARALLEL_LOCAL_BYTES
        or any(a.startswith(("--direct_num_workers", "--direct_running_mode")) for a in beam_args)
    ):
        return []
    return ["--direct_num_workers", str(min(cpus, 4)), "--direct_running_mode", "multi_processing"]


#: The command Beam's local runner starts for each worker process (see local_runner).
WORKER_MODULE = "pipelines.beam_worker"


class _InMemoryModeNote(logging.Filter):
    """FnApiRunner warns that several workers want ``direct_running_mode`` set to
    ``multi_processing`` whenever it is not, even with a worker environment of our own;
    that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "direct_running_mode should be" not in record.getMessage()


def local_runner(options: PipelineOptions, zygote=None):
    """The runner for a load on local worker processes, or None for Beam's own choice.

    When the options say ``--direct_running_mode multi_processing`` (as
    :func:`local_parallelism` adds them), this is Beam's FnApiRunner with the same
    worker processes, started as ``python -m pipelines.beam_worker``: Beam's harness,
    forked ready-made from ``zygote`` (a :class:`pipelines.beam_worker.Zygote`, which
    the caller starts before the pipeline runs and closes) and without the
    interpreter's teardown at exit. The running mode in ``options`` becomes
    ``in_memory``: with ``multi_processing``, FnApiRunner would replace the worker
    command by its own.
    """
    import shlex

    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    direct.direct_running_mode = "in_memory"
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(
        _IN_MEMORY_NOTE
    )
    command = f"{shlex.quote(sys.executable)} -m {WORKER_MODULE}"
    if zygote is not None:
        command += f" --zygote {shlex.quote(zygote.path)}"
    return FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(command))


_IN_MEMORY_NOTE = _InMemoryModeNote()


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

    raise WarehouseError(
        "no staging location for this warehouse: pass --staging URI (a "
        "local directory, or gs://BUCKET/path for BigQuery and Dataflow) or "
        "--temp_location gs://BUCKET/tmp"
    )


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
    return Staged(
        _match(FileSystems.join(stage, "events", "*.parquet")),
        _match(FileSystems.join(stage, "dead_letters", "*.parquet")),
        totals,
        {u: (r, e) for u, (r, e) in per_file.items()},
    )


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
        self.stream.write(
            f"\rloading: {files}/{self.total_files} files, {events:,} events "
            f"staged, {events / secs:,.0f} events/s   "
        )
        self.stream.flush()


def load_days(
    archive_date: date | None, days: int = DEFAULT_DAYS, today: date | None = None
) -> list[date]:
    """The archive days a load looks at: ``--date D`` alone, else the last ``days`` days
    ending today (UTC), oldest first."""
    if archive_date is not None:
        return [archive_date]
    if days < 1:
        raise ValueError("--days must be at least 1")
    today = today or datetime.now(timezone.utc).date()
    return [today - timedelta(days=i) for i in range(days - 1, -1, -1)]


def files_to_read(
    listing: Listing, manifest: dict[str, tuple[int, str]], full: bool = False
) -> tuple[list[ArchiveFile], int]:
    """(files to read, files skipped): a file is skipped when the manifest holds it with
    the same size and generation; a grown or rewritten file is read again."""
    if full:
        return list(listing.files), 0
    todo = [f for f in listing.files if manifest.get(f.uri) != (f.size, f.generation)]
    return todo, len(listing.files) - len(todo)


def run_load(
    archive: str | None,
    archive_date: date | None,
    warehouse,
    *,
    config: NormalizeSettings,
    sources: Iterable[Source] | None = None,
    days: int = DEFAULT_DAYS,
    full: bool = False,
    runner: str = "DirectRunner",
    staging: str | None = None,
    beam_args: Iterable[str] = (),
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    progress: bool = False,
    record_idle: bool = True,
    today: date | None = None,
) -> LoadReport:
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
    zygote = Zygote() if files else None
    runner = local_runner(options, zygote) if runner_name == "FnApiRunner" else None
    if runner is None:
        zygote = None  # the workers, if any, are Beam's own
    started_at = datetime.now(timezone.utc)
    load_id = f"{window[-1]:%Y%m%d}-{started_at:%H%M%S}-{uuid.uuid4().hex[:8]}"
    label = sources_label(srcs)
    status = "succeeded" if files else ("up_to_date" if listing.files else "empty")
    message = explain_empty(listing, srcs, window) if status == "empty" else ""
    if message:
        log.info("%s", message)
    newest = max((float(f.generation) for f in listing.files if f.generation), default=None)
    report = LoadReport(
        load_id=load_id,
        archive=label,
        archive_date=window[-1],
        warehouse=wh.uri,
        runner=runner_name,
        files_read=len(files),
        per_provider={},
        seconds=0.0,
        started_at=started_at,
        files_skipped=skipped,
        first_date=window[0],
        status=status,
        message=message,
        sources=[s.spec for s in srcs],
        newest_file_at=(datetime.fromtimestamp(newest, tz=timezone.utc) if newest else None),
    )
    if not files and not record_idle:
        report.seconds = time.monotonic() - t0
        return report
    staging_root = staging or default_staging(wh, options)
    stage = FileSystems.join(staging_root, load_id)
    remove_stale_staging(staging_root)
    try:
        staged = Staged([], [], {}, {})
        if files:
            pipeline = beam.Pipeline(runner=runner, options=options)
            build_pipeline(
                pipeline,
                files=files,
                staging=stage,
                config=config,
                load_id=load_id,
                ingested_at=started_at,
                chunk_lines=chunk_lines,
            )
            if zygote is not None and zygote.start():
                log.debug("worker processes are forked from a zygote (pid %s)", zygote.pid)
            with Progress(stage, len(files)) if progress else _NoProgress():
                state = pipeline.run().wait_until_finish()
            if not _finished(state):
                raise RuntimeError(f"load pipeline ended in state {state}; nothing was committed")
            staged = collect_staged(stage)
        batch = LoadBatch(
            load_id=load_id,
            archive=label,
            archive_date=window[-1],
            started_at=started_at,
            event_files=staged.event_files,
            dead_letter_files=staged.dead_letter_files,
            stats=staged.stats,
            files_read=len(files),
            runner=runner_name,
            files=manifest_rows(files, staged.per_file, load_id),
            files_skipped=skipped,
            first_date=window[0],
            status="empty" if status == "empty" else "succeeded",
        )
        wh.ensure_schema()
        merged = wh.commit_load(batch)
    finally:
        if zygote is not None:
            zygote.close()
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
        if (
            s.layout == "hourly"
            and s.root == f"{root}/{s.provider}"
            and all(t in srcs for t in trio)
        ):
            if root not in used:
                used.add(root)
                parts.append(root)
        else:
            parts.append(s.spec)
    return " ".join(parts)


def manifest_rows(
    files: list[ArchiveFile], per_file: dict[str, tuple[int, int]], load_id: str
) -> list[dict[str, Any]]:
    """``loaded_files`` rows for the files a load read (loaded_at is set at commit)."""
    return [
        {
            "source_uri": f.uri,
            "provider": f.provider,
            "archive_date": f.day,
            "size": f.size,
            "generation": f.generation or None,
            "load_id": load_id,
            "records": per_file.get(f.uri, (0, 0))[0],
            "events": per_file.get(f.uri, (0, 0))[1],
        }
        for f in files
    ]


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


def remove_stale_staging(
    staging_root: str, *, max_age: float = STALE_STAGING_SECONDS, now: float | None = None
) -> list[str]:
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
