"""Real ``mailpulse serve`` subprocesses and hostile clients for the collector tests.

Everything is on 127.0.0.1, bounded in count and time, and stops by itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
SIG_H = "X-Twilio-Email-Event-Webhook-Signature"
TS_H = "X-Twilio-Email-Event-Webhook-Timestamp"
CMC_KEY = "cmc-secret-9d1e77b2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signing_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    priv = ec.generate_private_key(ec.SECP256R1())
    pub = base64.b64encode(
        priv.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    return priv, pub


def signed_batch(priv, tag: str, n: int = 20) -> tuple[bytes, dict[str, str]]:
    now = int(time.time())
    events = [
        {
            "email": f"user{i}@example.com",
            "timestamp": now,
            "event": "delivered",
            "sg_event_id": f"{tag}-{i}",
            "sg_message_id": f"{tag}-{i}.filter0001",
        }
        for i in range(n)
    ]
    body = json.dumps(events, separators=(",", ":")).encode()
    ts = str(now)
    sig = base64.b64encode(priv.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return body, {SIG_H: sig, TS_H: ts, "Content-Type": "application/json"}


class Serve:
    """``mailpulse serve`` in its own process group; output (stdout+stderr) in ``log``."""

    def __init__(
        self, tmp: Path, *flags: str, pub: str | None = None, cmc: bool = True, name: str = "serve"
    ):
        self.port = free_port()
        self.archive = tmp / f"{name}-archive"
        self.log_path = tmp / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("MAILPULSE_SENDGRID_PUBLIC_KEYS", None)
        if pub:
            env["MAILPULSE_SENDGRID_PUBLIC_KEYS"] = pub
        if cmc:
            env["MAILPULSE_CMC_API_KEY"] = CMC_KEY
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines",
                "serve",
                "--archive",
                str(self.archive),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *flags,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.healthz()["status"] == "ok":
                    break
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def healthz(self) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", "/healthz")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float = 10,
        chunked: bool = False,
    ) -> tuple[int, bytes, float]:
        """(status, body, seconds) of one post on a fresh connection."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        t = time.perf_counter()
        try:
            if chunked:
                c.request("POST", path, body=_chunks(body), headers=headers, encode_chunked=True)
            else:
                c.request("POST", path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            return r.status, data, time.perf_counter() - t
        finally:
            c.close()

    def stop(self) -> str:
        """SIGTERM (graceful), wait; kill -9 the group if it hangs. Returns the log text."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()
        return self.log_path.read_text(errors="replace")


def _chunks(body: bytes, size: int = 256 * 1024):
    for i in range(0, len(body), size):
        yield body[i : i + size]


@dataclass
class FloodStats:
    opened: int = 0
    closed_by_server: int = 0
    answered: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    max_open: int = 0


class SlowFlood:
    """``n`` connections that send ``prefix`` and then one byte of ``trickle`` every
    ``interval`` seconds, from one thread, until ``stop()`` or ``seconds`` have passed.
    A connection the server closes is replaced (the attacker keeps the pressure on)."""

    def __init__(
        self,
        port: int,
        n: int,
        prefix: bytes,
        trickle: bytes = b"a",
        interval: float = 0.5,
        seconds: float = 15.0,
        refill: bool = True,
    ):
        self.port, self.n, self.prefix, self.trickle = port, n, prefix, trickle
        self.interval, self.seconds, self.refill = interval, seconds, refill
        self.stats = FloodStats()
        self._stop = False

    def _open(self, sel: selectors.BaseSelector) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(self.prefix)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        self.stats.opened += 1

    def stop(self) -> None:
        self._stop = True

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        deadline = time.monotonic() + self.seconds
        try:
            for _ in range(self.n):
                self._open(sel)
            pos = 0
            while not self._stop and time.monotonic() < deadline:
                byte = self.trickle[pos % len(self.trickle) : pos % len(self.trickle) + 1]
                pos += 1
                gone = []
                for key in list(sel.get_map().values()):
                    try:
                        key.fileobj.send(byte)
                    except OSError:
                        gone.append(key.fileobj)
                for key, _ in sel.select(timeout=0):
                    try:
                        data = key.fileobj.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        parts = data.split(b"\r\n", 1)[0].split()
                        code = parts[1].decode("latin-1") if len(parts) > 1 else "?"
                        self.stats.answered[code] = self.stats.answered.get(code, 0) + 1
                    gone.append(key.fileobj)
                for s in set(gone):
                    sel.unregister(s)
                    s.close()
                    self.stats.closed_by_server += 1
                    if self.refill and not self._stop:
                        self._open(sel)
                self.stats.max_open = max(self.stats.max_open, len(sel.get_map()))
                time.sleep(self.interval)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()
