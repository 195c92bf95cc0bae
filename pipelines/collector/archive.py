"""Durable archive writes for the webhook collector and ``drain-sqs``.

Every accepted body becomes one line appended to an *open* file,
``<root>/<provider>/YYYY/MM/DD/HH/<instance>-<seq>.json.open``, and is on disk
(``os.fsync``) before the collector answers 2xx (before ``drain-sqs`` deletes the
message), so an acknowledged post survives ``kill -9`` and a power cut. ``<instance>``
is unique per worker process, so workers never share a file.

**Files are immutable once visible.** A load reads ``*.json[.gz]``, ``*.ndjson[.gz]``
and ``*.jsonl[.gz]``; an open file ends in ``.open`` and temporaries are hidden
(``.``-prefixed) and end in ``.tmp``, so a load never sees a file that is still being
written. A file is *published* -- closed, gzip-compressed to a hidden temporary,
fsynced, renamed to ``<instance>-<seq>.json.gz`` in one atomic step, then the
``.open`` file is removed -- when

- it is ``rotate_seconds`` old (default 60; counted from its first line, minus a small
  margin for compressing and shipping), so a line is in a published file at most
  ``rotate_seconds`` after it was written;
- the hour changes, or it reaches ``max_bytes``.

A crash between the rename and the removal leaves the ``.json.gz`` and the ``.open``
file; only the first is visible, and the next recovery sweep removes the second.

Each open file carries an exclusive ``flock``. A writer that starts takes over every ``.open`` file whose lock it can get: its owner
closed it or died. It cuts a torn last line (a write interrupted by a crash, never
acknowledged), publishes the file and ships it. (``.json`` files left open by earlier
versions, which wrote open files under their final name, are finished the same way.)

For ``gs://`` / ``s3://`` archives files are written to a local spool directory and
published files are copied to the archive through Beam's ``FileSystems``; the local copy
is deleted only after the remote object exists with the same size. Until then the file
counts as *unshipped* (:func:`spool_status`, shown by ``/healthz``), and the last
failure is kept in ``<spool>/.mailpulse-ship-status`` so every worker reports it.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger("mailpulse.collector")

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_ROTATE_SECONDS = 60.0
REMOTE_SCHEMES = ("gs://", "s3://")

#: An open file: ``<instance>-<seq>.json.open``. Published: ``<instance>-<seq>.json.gz``.
OPEN_SUFFIX = ".json.open"
PUBLISHED_SUFFIX = ".json.gz"
LEGACY_OPEN_SUFFIX = ".json"  # open files of earlier versions (visible while open)
SHIP_STATUS_FILE = ".mailpulse-ship-status"

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


def new_instance_id(prefix: str = "") -> str:
    """Unique per worker process: host, pid and a random suffix (pids are reused)."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
    return f"{prefix}{host}-{os.getpid()}-{secrets.token_hex(3)}"


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def published_name(open_name: str) -> str:
    """``x.json.open`` (or a legacy open ``x.json``) -> ``x.json.gz``."""
    if open_name.endswith(OPEN_SUFFIX):
        return open_name[: -len(OPEN_SUFFIX)] + PUBLISHED_SUFFIX
    return open_name + ".gz"


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


def ship_hint(exc: BaseException, dest_root: str) -> str:
    """What to do about a failed upload to ``dest_root``, from the error's text (the
    boto3 / google-cloud errors arrive wrapped in Beam's own exceptions)."""
    text = f"{type(exc).__name__}: {exc}"
    # URLs are dropped first: a port or an object name such as :57403 is not an HTTP status
    low = re.sub(r"\w+://\S+", " ", text.lower())
    bucket = dest_root.split("/")[2] if "://" in dest_root else dest_root
    s3 = dest_root.startswith("s3://")
    status = set(re.findall(r"\b(40[34])\b", low))
    if (
        "nosuchbucket" in low
        or "bucket does not exist" in low
        or "notfound" in low
        or "404" in status
    ):
        # an upload that gets 404 writes into a bucket that is not there
        return f"the bucket {bucket!r} does not exist (HTTP 404): create it, or fix --archive"
    if (
        "no credentials" in low
        or "unable to locate credentials" in low
        or "defaultcredentialserror" in low
        or "could not automatically determine credentials" in low
    ):
        return "no credentials found: " + (
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (or run with an instance role)"
            if s3
            else "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
        )
    if (
        any(
            k in low
            for k in (
                "accessdenied",
                "access denied",
                "invalidaccesskeyid",
                "signaturedoesnotmatch",
                "forbidden",
                "expiredtoken",
            )
        )
        or "403" in status
    ):
        return (
            f"access to {bucket!r} was refused: check the credentials and that they may write "
            f"objects there"
            + (
                " (s3:PutObject, s3:ListBucket)"
                if s3
                else " (roles/storage.objectCreator + objects.list)"
            )
        )
    if any(
        k in low
        for k in (
            "could not connect",
            "connection refused",
            "endpointconnectionerror",
            "max retries exceeded",
            "name or service not known",
            "timed out",
            "connectionerror",
            "failed to establish",
            "connect timeout",
        )
    ):
        return "the storage endpoint cannot be reached: check the network and " + (
            "AWS_ENDPOINT_URL / --s3_endpoint_url / AWS_REGION" if s3 else "STORAGE_EMULATOR_HOST"
        )
    return "check the archive URI, the credentials and the network"


class Shipper:
    """Copies published archive files to ``dest_root`` (``gs://``, ``s3://`` or a local
    path) with Beam's ``FileSystems`` and confirms the copy by its size."""

    def __init__(self, dest_root: str):
        self.dest_root = dest_root.rstrip("/")

    def ship(self, local: Path, rel: str) -> str:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        dest = f"{self.dest_root}/{rel}"
        size = local.stat().st_size
        # UNCOMPRESSED: the bytes are already gzip; AUTO would compress them again.
        with open(local, "rb") as src:
            out = FileSystems.create(
                dest, mime_type="application/gzip", compression_type=CompressionTypes.UNCOMPRESSED
            )
            try:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.close()
            except BaseException:
                _discard(out)
                raise
        found = FileSystems.match([dest])[0].metadata_list
        if not found or found[0].size_in_bytes != size:
            got = found[0].size_in_bytes if found else "nothing"
            raise ArchiveError(
                f"upload of {rel} not confirmed: expected {size} bytes at {dest}, found {got}"
            )
        return dest


def _discard(out) -> None:
    """Abandon a failed upload so that nothing retries it later: the GCS writer's
    ``close()`` retries the upload (for up to 120 s) when the object is garbage-collected
    unless it was terminated."""
    terminate = getattr(out, "terminate", None)
    try:
        if terminate is not None:
            terminate()
    except Exception as exc:  # noqa: BLE001 - the endpoint is the problem; close locally below
        log.debug("cancelling the failed upload: %s", exc)
    buf = getattr(out, "_buffer", None)
    if buf is not None and not getattr(buf, "closed", True):
        buf.close()


def spool_status(spool: Path | str, now: float | None = None) -> dict[str, Any]:
    """Unshipped files in a spool: ``{"files", "bytes", "oldest_age_seconds",
    "last_error"}`` (``last_error``: the latest failed upload, cleared by a success;
    ``{"error", "fix", "at", "since", "failures"}``). Read from the directory, so every
    worker process reports the same."""
    spool = Path(spool)
    now = time.time() if now is None else now
    n, size, oldest = 0, 0, None
    for p in spool.rglob("*" + PUBLISHED_SUFFIX):
        if p.name.startswith("."):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:  # shipped meanwhile
            continue
        n += 1
        size += st.st_size
        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    last = None
    try:
        last = json.loads((spool / SHIP_STATUS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        pass
    return {
        "files": n,
        "bytes": size,
        "oldest_age_seconds": round(max(0.0, now - oldest), 1) if oldest is not None else None,
        "last_error": last,
    }


@dataclass
class _OpenFile:
    fd: int
    path: Path
    hour: str
    size: int
    opened: datetime


class ArchiveWriter:
    """Appends lines to per-provider hourly files under ``spool``; one per worker process.

    ``clock`` returns an aware UTC datetime (injected in tests). ``rotate_seconds``: a
    file is published at most this long after its first line (``None`` or 0: only by
    hour and size). ``shipper`` is set when published files go elsewhere (a remote
    archive); otherwise ``spool`` is the archive. ``on_event(name, n)`` feeds the
    collector's counters.
    """

    def __init__(
        self,
        spool: Path | str,
        *,
        instance: str | None = None,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        rotate_seconds: float | None = DEFAULT_ROTATE_SECONDS,
        clock: Callable[[], datetime] | None = None,
        shipper: Shipper | None = None,
        on_event: Callable[[str, int], None] | None = None,
    ):
        self.spool = Path(spool)
        self.instance = instance or new_instance_id()
        self.max_bytes = max_bytes
        self.rotate_seconds = rotate_seconds or None
        # Rotate a little before the deadline: compressing and shipping take time too.
        self._rotate_after = (
            None
            if self.rotate_seconds is None
            else self.rotate_seconds - min(2.0, self.rotate_seconds / 10)
        )
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.shipper = shipper
        self.on_event = on_event or (lambda name, n: None)
        self._lock = threading.Lock()
        self._open: dict[str, _OpenFile] = {}
        self._seq = 0
        self._pending: list[Path] = []  # closed open files waiting to be published
        self._work_lock = threading.Lock()
        #: set when a file is opened or waits to be published (wakes a maintenance loop)
        self.wakeup = threading.Event()
        self.spool.mkdir(parents=True, exist_ok=True)

    # -- writing ---------------------------------------------------------------------------
    def append(self, provider: str, line: bytes) -> Path:
        """Append one line and fsync it; raises ArchiveError when it is not on disk."""
        return self.append_many(provider, [line])

    def append_many(self, provider: str, lines: Iterable[bytes]) -> Path:
        """Append lines (each without a line break) with one fsync: all of them are on
        disk when this returns, none of them when it raises ArchiveError."""
        data = b"".join(ln + b"\n" for ln in lines)
        if not data:
            raise ValueError("nothing to append")
        with self._lock:
            now = self.clock().astimezone(timezone.utc)
            hour = now.strftime("%Y/%m/%d/%H")
            cur = self._open.get(provider)
            if cur is not None and (
                cur.hour != hour
                or self._due(cur, now)
                or (cur.size and cur.size + len(data) > self.max_bytes)
            ):
                self._close_locked(provider)
                cur = None
            try:
                if cur is None:
                    cur = self._open_locked(provider, hour, now)
                self._write_all(cur, data)
            except OSError as exc:
                self.on_event("write_errors", 1)
                if cur is not None:
                    self._abandon_locked(provider, cur)
                raise ArchiveError(f"archive write failed: {exc.strerror or exc}") from exc
            cur.size += len(data)
            return cur.path

    def _due(self, f: _OpenFile, now: datetime) -> bool:
        return (
            self._rotate_after is not None
            and (now - f.opened).total_seconds() >= self._rotate_after
        )

    def _open_locked(self, provider: str, hour: str, now: datetime) -> _OpenFile:
        d = self.spool / provider / hour
        d.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        path = d / f"{self.instance}-{self._seq:06d}{OPEN_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _fsync_dir(d)  # the new directory entry is durable too
        except OSError:
            os.close(fd)
            raise
        f = _OpenFile(fd, path, hour, 0, now)
        self._open[provider] = f
        self.on_event("archive_files", 1)
        self.wakeup.set()  # a new deadline: a waiting maintenance loop recomputes its wait
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
            if written:  # take back a partial write so the file stays one record per line
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
            self.wakeup.set()
        else:
            try:
                f.path.unlink()
            except OSError:
                pass

    def _close_locked(self, provider: str) -> None:
        f = self._open.pop(provider)
        os.close(f.fd)  # releases the flock
        self._pending.append(f.path)
        self.wakeup.set()

    # -- maintenance (a background thread in the server; called directly in tests) ------------
    def seconds_until_due(self) -> float | None:
        """How long until an open file must be published (0 when a closed one waits);
        None when nothing is open or waiting."""
        with self._lock:
            if self._pending:
                return 0.0
            if not self._open:
                return None
            now = self.clock().astimezone(timezone.utc)
            waits = []
            for f in self._open.values():
                end_of_hour = 3600 - (now.minute * 60 + now.second + now.microsecond / 1e6)
                w = end_of_hour
                if self._rotate_after is not None:
                    w = min(w, self._rotate_after - (now - f.opened).total_seconds())
                waits.append(w)
            return max(0.0, min(waits)) + 0.01

    def rotate_expired(self) -> int:
        """Close files whose hour has passed or that are ``rotate_seconds`` old (an idle
        worker must not keep them open)."""
        with self._lock:
            now = self.clock().astimezone(timezone.utc)
            hour = now.strftime("%Y/%m/%d/%H")
            stale = [p for p, f in self._open.items() if f.hour != hour or self._due(f, now)]
            for p in stale:
                self._close_locked(p)
            return len(stale)

    def close(self) -> None:
        """Close every open file and publish/ship what is closed (graceful shutdown)."""
        with self._lock:
            for p in list(self._open):
                self._close_locked(p)
        self.process_closed()

    def publish_due(self) -> int:
        """Publish (and ship) every file that is due; returns how many were published."""
        self.rotate_expired()
        return self.process_closed()

    def maintain(self, retry_backlog: bool = True) -> None:
        """Publish what is due; with ``retry_backlog``, also retry uploads that failed
        before."""
        self.publish_due()
        if retry_backlog and self.shipper is not None:
            self.ship_pending()

    def process_closed(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
            self.wakeup.clear()
        return sum(1 for path in pending if self._finish(path))

    def recover(self, ship: bool = True) -> int:
        """Take over open files nobody holds (closed, or left by a dead worker) and
        publish them; then ship what is waiting. Returns how many files were published."""
        with self._lock:
            mine = {f.path for f in self._open.values()} | set(self._pending)
        n = 0
        candidates = list(self.spool.rglob("*" + OPEN_SUFFIX)) + list(
            self.spool.rglob("*" + LEGACY_OPEN_SUFFIX)
        )
        for path in sorted(candidates):
            if path in mine or path.name.startswith("."):
                continue
            if self._finish(path):
                n += 1
        if ship and self.shipper is not None:
            self.ship_pending()
        return n

    def _finish(self, path: Path) -> bool:
        """Publish (and ship) one closed open file, under its lock. False when someone
        else holds it or it is already gone."""
        with self._work_lock:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                return False
            try:
                if not _try_lock(fd) or os.fstat(fd).st_nlink == 0:
                    return False
                gz = path.with_name(published_name(path.name))
                for tmp in path.parent.glob(f".{gz.name}.*.tmp"):
                    tmp.unlink(missing_ok=True)  # left by a compression cut short
                if not gz.exists():
                    _cut_torn_tail(fd)
                    if os.fstat(fd).st_size == 0:  # nothing acknowledged in it
                        path.unlink()
                        _fsync_dir(path.parent)
                        return False
                    self._compress(fd, path, gz)
                # else: published before a crash, the .open was not removed yet
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
        tmp = path.with_name(f".{gz.name}.{os.getpid()}.tmp")
        with os.fdopen(os.dup(fd), "rb") as src:
            src.seek(0)
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out,
            ):
                shutil.copyfileobj(src, out, 1024 * 1024)
            with open(tmp, "rb+") as raw:
                os.fsync(raw.fileno())
        os.replace(tmp, gz)
        _fsync_dir(path.parent)

    # -- shipping --------------------------------------------------------------------------
    def ship_pending(self) -> int:
        """Retry uploads, oldest first; stops at the first failure (the endpoint is
        probably down; the next round tries again)."""
        assert self.shipper is not None
        n = 0
        for gz in sorted(self.spool.rglob("*" + PUBLISHED_SUFFIX)):
            if gz.name.startswith("."):
                continue
            ok = self._ship_one(gz)
            if ok is None:
                break
            n += ok
        return n

    def _ship_one(self, gz: Path) -> bool | None:
        """True: shipped; False: not ours to ship (gone, or another worker has it);
        None: the upload failed (kept, retried later)."""
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
                fix = ship_hint(exc, self.shipper.dest_root)
                self._record_ship_status(exc, fix)
                log.warning(
                    "could not ship %s to %s: %s -- %s (the file stays in the spool %s "
                    "and is retried)",
                    rel,
                    self.shipper.dest_root,
                    _short(exc),
                    fix,
                    self.spool,
                )
                return None
            gz.unlink()
            self._record_ship_status(None, None)
            self.on_event("archive_files_shipped", 1)
            return True
        finally:
            os.close(fd)

    def _record_ship_status(self, exc: BaseException | None, fix: str | None) -> None:
        path = self.spool / SHIP_STATUS_FILE
        try:
            if exc is None:
                path.unlink(missing_ok=True)
                return
            now = self.clock().astimezone(timezone.utc)
            prev: dict[str, Any] = {}
            try:
                prev = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                pass
            status = {
                "error": _short(exc),
                "fix": fix,
                "at": now.isoformat(),
                "since": prev.get("since", now.isoformat()),
                "failures": int(prev.get("failures", 0)) + 1,
            }
            tmp = path.with_name(f"{SHIP_STATUS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(status))
            os.replace(tmp, path)
        except OSError as err:  # the status is a report; the upload retry does not depend on it
            log.debug("could not record the ship status in %s: %s", path, err)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + "..."


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
