"""Durable archive writes for the webhook collector.

Every accepted POST body becomes one line appended to
``<root>/<provider>/YYYY/MM/DD/HH/<instance>-<seq>.json`` and is on disk
(``os.fsync``) before the collector answers 2xx, so an acknowledged post survives
``kill -9`` and a power cut. ``<instance>`` is unique per worker process, so workers
never share a file.

Files rotate when the hour changes or when they reach ``max_bytes``. A closed file is
gzip-compressed (written to a hidden temporary name, fsynced, renamed to ``.json.gz``,
then the ``.json`` is removed), so a reader sees either the ``.json`` or the complete
``.json.gz``; a crash between the rename and the removal leaves both, which the load
job's de-duplication by ``event_id`` absorbs and the next recovery sweep resolves.

Each open file carries an exclusive ``flock``. A worker that starts (or a periodic
sweep) takes over every ``.json`` file whose lock it can get: its owner has closed it or
died. It cuts a torn last line (a write interrupted by a crash, never acknowledged),
compresses the file and ships it.

For ``gs://`` / ``s3://`` archives files are written to a local spool directory and
closed files are copied to the archive through Beam's ``FileSystems``; the local copy
is deleted only after the remote object exists with the same size.
"""
from __future__ import annotations

import fcntl
import gzip
import logging
import os
import re
import secrets
import shutil
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

log = logging.getLogger("mailpulse.collector")

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
REMOTE_SCHEMES = ("gs://", "s3://")

# Whitespace around a raw line break is always outside a JSON string (a JSON string
# cannot contain a raw CR or LF), so removing it keeps the document identical.
_LINE_BREAK_WS = re.compile(rb"[ \t]*[\r\n][ \t\r\n]*")


class ArchiveError(Exception):
    """A write that did not reach the disk; the collector answers 5xx so the sender retries."""


def compact_line(body: bytes) -> bytes:
    """The body as one line: surrounding whitespace removed, and where it spans several
    lines, the whitespace around each line break removed. Nothing else changes (key
    order, number spellings and escapes stay as received); a one-line body stays
    byte-exact. ``body`` must be valid JSON (checked by the caller)."""
    b = body.strip(b" \t\r\n")
    if b"\n" in b or b"\r" in b:
        b = _LINE_BREAK_WS.sub(b"", b)
    return b


def new_instance_id() -> str:
    """Unique per worker process: host, pid and a random suffix (pids are reused)."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class Shipper:
    """Copies closed archive files to ``dest_root`` (``gs://``, ``s3://`` or a local path)
    with Beam's ``FileSystems`` and confirms the copy by its size."""

    def __init__(self, dest_root: str):
        self.dest_root = dest_root.rstrip("/")

    def ship(self, local: Path, rel: str) -> str:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        dest = f"{self.dest_root}/{rel}"
        size = local.stat().st_size
        # UNCOMPRESSED: the bytes are already gzip; AUTO would compress them again.
        with open(local, "rb") as src:
            out = FileSystems.create(dest, mime_type="application/gzip",
                                     compression_type=CompressionTypes.UNCOMPRESSED)
            try:
                shutil.copyfileobj(src, out, 1024 * 1024)
            finally:
                out.close()
        found = FileSystems.match([dest])[0].metadata_list
        if not found or found[0].size_in_bytes != size:
            got = found[0].size_in_bytes if found else "nothing"
            raise ArchiveError(f"upload of {rel} not confirmed: expected {size} bytes at {dest}, "
                               f"found {got}")
        return dest


@dataclass
class _OpenFile:
    fd: int
    path: Path
    hour: str
    size: int


class ArchiveWriter:
    """Appends lines to per-provider hourly files under ``spool``; one per worker process.

    ``clock`` returns an aware UTC datetime (injected in tests). ``shipper`` is set when
    closed files go elsewhere (a remote archive); otherwise ``spool`` is the archive.
    ``on_event(name, n)`` feeds the collector's counters.
    """

    def __init__(self, spool: Path | str, *, instance: str | None = None,
                 max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 clock: Callable[[], datetime] | None = None,
                 shipper: Shipper | None = None,
                 on_event: Callable[[str, int], None] | None = None):
        self.spool = Path(spool)
        self.instance = instance or new_instance_id()
        self.max_bytes = max_bytes
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.shipper = shipper
        self.on_event = on_event or (lambda name, n: None)
        self._lock = threading.Lock()
        self._open: dict[str, _OpenFile] = {}
        self._seq = 0
        self._pending: list[Path] = []  # closed .json files waiting to be compressed
        self._work_lock = threading.Lock()
        self.spool.mkdir(parents=True, exist_ok=True)

    # -- writing ---------------------------------------------------------------------------
    def append(self, provider: str, line: bytes) -> Path:
        """Append one line and fsync it; raises ArchiveError when it is not on disk."""
        data = line + b"\n"
        with self._lock:
            now = self.clock().astimezone(timezone.utc)
            hour = now.strftime("%Y/%m/%d/%H")
            cur = self._open.get(provider)
            if cur is not None and (cur.hour != hour
                                    or (cur.size and cur.size + len(data) > self.max_bytes)):
                self._close_locked(provider)
                cur = None
            try:
                if cur is None:
                    cur = self._open_locked(provider, hour)
                self._write_all(cur, data)
            except OSError as exc:
                self.on_event("write_errors", 1)
                if cur is not None:
                    self._abandon_locked(provider, cur)
                raise ArchiveError(f"archive write failed: {exc.strerror or exc}") from exc
            cur.size += len(data)
            return cur.path

    def _open_locked(self, provider: str, hour: str) -> _OpenFile:
        d = self.spool / provider / hour
        d.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        path = d / f"{self.instance}-{self._seq:06d}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _fsync_dir(d)  # the new directory entry is durable too
        except OSError:
            os.close(fd)
            raise
        f = _OpenFile(fd, path, hour, 0)
        self._open[provider] = f
        self.on_event("archive_files", 1)
        return f

    @staticmethod
    def _write_all(f: _OpenFile, data: bytes) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(f.fd, view[written:])
            os.fsync(f.fd)
        except OSError:
            if written:  # take back a partial line so the file stays one record per line
                try:
                    os.ftruncate(f.fd, f.size)
                except OSError:
                    pass
            raise

    def _abandon_locked(self, provider: str, f: _OpenFile) -> None:
        """After a failed write, stop using the file; the next post opens a new one."""
        self._open.pop(provider, None)
        try:
            os.close(f.fd)
        except OSError:
            pass
        if f.size:
            self._pending.append(f.path)
        else:
            try:
                f.path.unlink()
            except OSError:
                pass

    def _close_locked(self, provider: str) -> None:
        f = self._open.pop(provider)
        os.close(f.fd)  # releases the flock
        self._pending.append(f.path)

    # -- maintenance (a background thread in the server; called directly in tests) ------------
    def rotate_expired(self) -> int:
        """Close files whose hour has passed (an idle worker must not keep them open)."""
        with self._lock:
            hour = self.clock().astimezone(timezone.utc).strftime("%Y/%m/%d/%H")
            stale = [p for p, f in self._open.items() if f.hour != hour]
            for p in stale:
                self._close_locked(p)
            return len(stale)

    def close(self) -> None:
        """Close every open file and compress/ship what is closed (graceful shutdown)."""
        with self._lock:
            for p in list(self._open):
                self._close_locked(p)
        self.process_closed()

    def maintain(self) -> None:
        self.rotate_expired()
        self.process_closed()
        if self.shipper is not None:
            self.ship_pending()

    def process_closed(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for path in pending:
            self._finish(path)

    def recover(self) -> int:
        """Take over .json files nobody holds (closed, or left by a dead worker) and
        finish them; then ship what is waiting. Returns how many files were finished."""
        mine = {f.path for f in self._open.values()}
        n = 0
        for path in sorted(self.spool.rglob("*.json")):
            if path in mine or path.name.startswith("."):
                continue
            if self._finish(path):
                n += 1
        if self.shipper is not None:
            self.ship_pending()
        return n

    def _finish(self, path: Path) -> bool:
        """Compress (and ship) one closed .json file, under its lock. False when someone
        else holds it or it is already gone."""
        with self._work_lock:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                return False
            try:
                if not _try_lock(fd) or os.fstat(fd).st_nlink == 0:
                    return False
                gz = path.with_name(path.name + ".gz")
                for tmp in path.parent.glob(f".{path.name}.gz.*.tmp"):
                    tmp.unlink(missing_ok=True)  # left by a compression cut short
                if not gz.exists():
                    _cut_torn_tail(fd)
                    if os.fstat(fd).st_size == 0:  # nothing acknowledged in it
                        path.unlink()
                        _fsync_dir(path.parent)
                        return False
                    self._compress(fd, path, gz)
                path.unlink()
                _fsync_dir(path.parent)
            finally:
                os.close(fd)
        self.on_event("archive_files_closed", 1)
        if self.shipper is not None:
            self._ship_one(gz)
        return True

    @staticmethod
    def _compress(fd: int, path: Path, gz: Path) -> None:
        tmp = path.with_name(f".{path.name}.gz.{os.getpid()}.tmp")
        with os.fdopen(os.dup(fd), "rb") as src:
            src.seek(0)
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                     mtime=0) as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            with open(tmp, "rb+") as raw:
                os.fsync(raw.fileno())
        os.replace(tmp, gz)
        _fsync_dir(path.parent)

    # -- shipping --------------------------------------------------------------------------
    def ship_pending(self) -> int:
        n = 0
        for gz in sorted(self.spool.rglob("*.json.gz")):
            if self._ship_one(gz):
                n += 1
        return n

    def _ship_one(self, gz: Path) -> bool:
        assert self.shipper is not None
        rel = gz.relative_to(self.spool).as_posix()
        try:
            fd = os.open(gz, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if not _try_lock(fd) or os.fstat(fd).st_nlink == 0:
                return False
            try:
                self.shipper.ship(gz, rel)
            except Exception as exc:  # noqa: BLE001 - any upload failure: keep the file, retry later
                self.on_event("ship_failures", 1)
                log.warning("could not ship %s (kept locally, retried later): %s", rel, exc)
                return False
            gz.unlink()
            self.on_event("archive_files_shipped", 1)
            return True
        finally:
            os.close(fd)


def _cut_torn_tail(fd: int) -> None:
    """Drop a last line without its newline: a write a crash interrupted (never
    acknowledged, so the sender retries it)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    if os.pread(fd, 1, size - 1) == b"\n":
        return
    pos, chunk = size, 65536
    while pos > 0:
        start = max(0, pos - chunk)
        buf = os.pread(fd, pos - start, start)
        i = buf.rfind(b"\n")
        if i >= 0:
            os.ftruncate(fd, start + i + 1)
            return
        pos = start
    os.ftruncate(fd, 0)
