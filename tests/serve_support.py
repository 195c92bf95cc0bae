"""A ``mailpulse serve`` subprocess for tests that post to it (CMC route: api_key only)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ROOT

CMC_KEY = "cmc-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``mailpulse serve --archive ARCHIVE ...`` in its own process group."""

    def __init__(
        self,
        archive: str,
        log: Path,
        *extra: str,
        env: dict | None = None,
        workers: int = 2,
        wait: bool = True,
        start_timeout: float = 60,
    ):
        self.port = free_port()
        full = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_CMC_API_KEY=CMC_KEY)
        full.update(env or {})
        self.log_path = log
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines",
                "serve",
                "--archive",
                str(archive),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--threads",
                "4",
                *extra,
            ],
            cwd=ROOT,
            env=full,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready(start_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/healthz")
                return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"server did not start; log: {self.log_text()[-3000:]}")
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def post_cmc(self, body: bytes) -> int:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(
                "POST",
                f"/webhooks/cmc?api_key={CMC_KEY}",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.log.close()
        return rc


def cmc_body(n: int, tag: str = "t") -> bytes:
    """A CMC bounces webhook body with one bounce, distinct per (tag, n)."""
    return json.dumps(
        {
            "server_composition": "pro",
            "event_type": "bounces",
            "event": {
                "bounces": [
                    {
                        "returnPath": "rp@example.com",
                        "reason": "unknown user",
                        "created": "2026-11-23 19:00:00",
                        "to": f"{tag}{n}@example.net",
                        "from": "news@example.com",
                        "status": "5.1.1",
                        "messageId": f"<{tag}-{n}@example.com>",
                        "subject": "s",
                    }
                ]
            },
        },
        separators=(",", ":"),
    ).encode()


class TcpProxy:
    """A loopback TCP forwarder to ``target_port`` that can be taken down (connection
    refused, open connections cut) and brought back on the same port: a storage
    endpoint that goes away and returns."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._conns: set = set()
        self._lock = threading.Lock()

    def up(self) -> "TcpProxy":
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    upstream = socket.create_connection(
                        ("127.0.0.1", proxy.target_port), timeout=10
                    )
                except OSError:
                    return
                with proxy._lock:
                    proxy._conns.update({self.request, upstream})
                t = threading.Thread(target=_pump, args=(upstream, self.request), daemon=True)
                t.start()
                _pump(self.request, upstream)
                t.join(10)
                upstream.close()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def _pump(src, dst) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
