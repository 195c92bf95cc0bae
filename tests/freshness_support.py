"""The embedded fresh-data set-up with real processes: ``mailpulse serve`` (signed SendGrid
webhooks) + ``mailpulse load --follow``, and a campaign that posts its events to the
collector the way SendGrid would. Used by tests/test_freshness_e2e.py and
benchmarks/bench_freshness.py."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIG_H = "X-Twilio-Email-Event-Webhook-Signature"
TS_H = "X-Twilio-Email-Event-Webhook-Timestamp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signing_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv = ec.generate_private_key(ec.SECP256R1())
    pub = base64.b64encode(
        priv.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    return priv, pub


@dataclass
class Stack:
    """serve + load --follow on one data directory (their logs under ``workdir``)."""

    workdir: Path
    hash_key: str
    rotate_seconds: float = 5
    interval: float = 5
    procs: list = field(default_factory=list)

    def __post_init__(self):
        self.archive = self.workdir / "archive"
        self.warehouse = f"duckdb://{self.workdir}/warehouse.duckdb"
        self.priv, pub = signing_key()
        self.port = free_port()
        self.env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            MAILPULSE_HASH_KEY=self.hash_key,
            MAILPULSE_SENDGRID_PUBLIC_KEYS=pub,
        )

    def start(self) -> "Stack":
        self.archive.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "serve.log",
            "serve",
            "--archive",
            str(self.archive),
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--threads",
            "4",
            "--rotate-seconds",
            f"{self.rotate_seconds:g}",
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self._request("GET", "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("serve did not start: " + self.log("serve.log")) from None
                time.sleep(0.1)
        self._spawn(
            "follow.log",
            "load",
            "--follow",
            "--archive",
            str(self.archive),
            "--warehouse",
            self.warehouse,
            "--interval",
            f"{self.interval:g}",
            "--days",
            "2",
            "--allow-empty",
        )
        return self

    def _spawn(self, log: str, *args: str) -> None:
        out = open(self.workdir / log, "ab")
        self.procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-u", "-m", "pipelines", *args],
                    cwd=ROOT,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                out,
            )
        )

    def log(self, name: str) -> str:
        return (self.workdir / name).read_text(errors="replace")[-4000:]

    def _request(self, method: str, path: str, body: bytes = b"", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, body=body or None, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def post_sendgrid(self, events: list[dict]) -> float:
        """POST one signed batch; returns the time it was acknowledged (time.time())."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        body = json.dumps(events, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        sig = base64.b64encode(
            self.priv.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode()
        status, text = self._request(
            "POST",
            "/webhooks/sendgrid",
            body,
            {"Content-Type": "application/json", SIG_H: sig, TS_H: ts},
        )
        if status != 200:
            raise AssertionError(f"collector answered {status}: {text[:300]!r}")
        return time.time()

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, out in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            out.close()


def campaign_events(emails: list[str], category: str, t0: int, fates: dict[str, str]):
    """SendGrid events of one send: processed for all, then each recipient's fate."""
    first, later = [], []
    for i, e in enumerate(emails):
        mid = f"camp{i:05d}.filter0001.1.{i}.0"
        base = {
            "email": e,
            "category": [category],
            "sg_message_id": mid,
            "smtp-id": f"<camp{i}@example.com>",
        }
        first.append(
            {**base, "event": "processed", "timestamp": t0, "sg_event_id": f"p-{category}-{i}"}
        )
        fate = fates[e]
        ev = {**base, "timestamp": t0 + 2, "sg_event_id": f"f-{category}-{i}"}
        if fate == "delivered":
            later.append({**ev, "event": "delivered", "response": "250 OK"})
        elif fate == "bounce":
            later.append(
                {
                    **ev,
                    "event": "bounce",
                    "type": "bounce",
                    "status": "5.1.1",
                    "reason": "550 5.1.1 user unknown",
                }
            )
        elif fate == "blocked":
            later.append(
                {
                    **ev,
                    "event": "bounce",
                    "type": "blocked",
                    "status": "5.7.1",
                    "reason": "554 5.7.1 blocked",
                }
            )
        elif fate == "dropped":
            later.append({**ev, "event": "dropped", "reason": "Bounced Address"})
    return first, later


def follower_thread(fn):
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t
