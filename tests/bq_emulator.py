"""The local BigQuery emulator for tests: ``bqemulator`` (PyPI) in its own venv.

bqemulator pins ``sqlglot<30.12`` while mailpulse needs a newer one, so it lives in a venv
of its own under the user's cache (``~/.cache/mailpulse/bqemulator-venv-VERSION``, or
``$MAILPULSE_BQEMULATOR_VENV``), created and installed from PyPI on first use and reused
after that. Offline, its start-up crashes installing DuckDB's ``spatial`` extension
(GEOGRAPHY only, PLATFORM-NOTES): :data:`START_SCRIPT` starts it with that load (and the
best-effort ``avro`` one) skipped, without touching the installed files.

:class:`RecordingProxy` sits between the client and the emulator and records every request
body, so tests can check the requests the code sends where the emulator ignores a field
(``requirePartitionFilter``, ``maximumBytesBilled``, dry runs) or lacks a feature.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

VERSION = "1.4.0"
REQUIREMENTS = [f"bqemulator=={VERSION}", "numpy"]

START_SCRIPT = '''\
"""Start bqemulator without DuckDB's downloadable extensions (written by mailpulse tests)."""
import sys
from bqemulator.storage import engine

for _name in ("_load_spatial", "_load_format_extensions"):
    if not hasattr(engine.DuckDBEngine, _name):
        sys.exit(f"bqemulator changed: DuckDBEngine.{_name} is gone; update tests/bq_emulator.py")
    # GEOGRAPHY (spatial) and Avro loads need extensions downloaded from the internet.
    setattr(engine.DuckDBEngine, _name, lambda self: None)

from bqemulator.cli import main
sys.exit(main(sys.argv[1:]))
'''


class EmulatorSetupError(RuntimeError):
    pass


def venv_dir() -> Path:
    if os.environ.get("MAILPULSE_BQEMULATOR_VENV"):
        return Path(os.environ["MAILPULSE_BQEMULATOR_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mailpulse" / f"bqemulator-venv-{VERSION}"


def _venv_ok(venv: Path) -> bool:
    py = venv / "bin" / "python"
    if not py.exists():
        return False
    r = subprocess.run(
        [str(py), "-c", "import numpy, bqemulator; print(bqemulator.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.returncode == 0 and r.stdout.strip() == VERSION


def ensure_venv(venv: Path | None = None, timeout: float = 900) -> Path:
    """The emulator's venv, created and installed from PyPI when missing (under a lock, so
    parallel test runs share one install). Raises EmulatorSetupError on failure."""
    venv = venv or venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_ok(venv):
            tmp = venv.with_name(venv.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            base = getattr(sys, "_base_executable", None) or sys.executable
            steps = [
                [base, "-m", "venv", str(tmp)],
                [
                    str(tmp / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    *REQUIREMENTS,
                ],
            ]
            for cmd in steps:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                if r.returncode != 0:
                    raise EmulatorSetupError(
                        f"could not set up the BigQuery emulator venv ({' '.join(cmd)} exited "
                        f"{r.returncode}); it needs PyPI. Set MAILPULSE_SKIP_BIGQUERY=1 to skip "
                        f"the BigQuery tests.\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
                    )
            shutil.rmtree(venv, ignore_errors=True)
            tmp.rename(venv)
            # the venv's scripts hold absolute paths; run it as `python start.py` only
        (venv / "mailpulse_start_bqemulator.py").write_text(START_SCRIPT)
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start(
    log_dir: Path,
    project: str = "test-project",
    ready_timeout: float = 60.0,
    venv: Path | None = None,
) -> Emulator:
    """Start the emulator on free loopback ports and wait until /readyz says ok."""
    venv = ensure_venv(venv)
    port, grpc = free_port(), free_port()
    log_path = Path(log_dir) / "bqemulator.log"
    logf = open(log_path, "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "python"),
            str(venv / "mailpulse_start_bqemulator.py"),
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            str(port),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc),
            "--project",
            project,
            "--ephemeral",
            "--log-level",
            "warning",
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=str(log_dir),
    )
    logf.close()
    emu = Emulator(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise EmulatorSetupError(
                f"bqemulator exited with {proc.returncode} at start:\n" + emu.log_tail()
            )
        try:
            with urllib.request.urlopen(emu.url + "/readyz", timeout=2) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return emu
        except OSError:
            pass
        if time.monotonic() > deadline:
            emu.stop()
            raise EmulatorSetupError(
                f"bqemulator not ready after {ready_timeout:.0f} s:\n" + emu.log_tail()
            )
        time.sleep(0.1)  # waiting on another process; nothing to inject


# -- recording proxy -------------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    body: dict | None

    @property
    def query(self) -> str | None:
        """The SQL of a query job (jobs.insert) or jobs.query request."""
        if not self.body:
            return None
        q = (self.body.get("configuration") or {}).get("query")
        if q:
            return q.get("query")
        if self.path.split("?")[0].endswith("/queries"):
            return self.body.get("query")
        return None


_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}


@dataclass
class RecordingProxy:
    """HTTP proxy on a free loopback port forwarding to ``target``, recording requests."""

    target: str
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        tgt = urlsplit(self.target)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self):
                body = self._body()
                parsed = None
                if body and "json" in (self.headers.get("Content-Type") or ""):
                    try:
                        parsed = json.loads(body)
                    except ValueError:
                        parsed = None
                with proxy._lock:
                    proxy.requests.append(Recorded(self.command, self.path, parsed))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Host"] = tgt.netloc
                conn = http.client.HTTPConnection(tgt.hostname, tgt.port, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() in _HOP:
                            continue
                        if k.lower() == "location":
                            v = v.replace(proxy.target, proxy.url)
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="bq-recording-proxy"
        )
        self._thread.start()

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[Recorded]:
        with self._lock:
            return list(self.requests[mark:])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
