"""``mailpulse serve`` as it runs in production: gunicorn, 2 worker processes, on 127.0.0.1.

- a load test: concurrent posts of signed 100-event SendGrid batches, bounded in count
  and time; prints requests/s and p99 latency;
- a durability test: ``kill -9`` of the whole server while posts are in flight; every
  post that got a 2xx is in the archive afterwards, byte-exact, and ``mailpulse
  normalize`` reads every archived file.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = pytest.mark.slow

SIG_H = "X-Twilio-Email-Event-Webhook-Signature"
TS_H = "X-Twilio-Email-Event-Webhook-Timestamp"


@pytest.fixture(scope="module")
def signing_key():
    priv = ec.generate_private_key(ec.SECP256R1())
    pub = base64.b64encode(
        priv.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    return priv, pub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``mailpulse serve`` subprocess in its own process group (master + workers)."""

    def __init__(self, archive: Path, pub: str, log: Path):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_SENDGRID_PUBLIC_KEYS=pub)
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
                "2",
                "--threads",
                "8",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.get("/healthz")["status"] == "ok":
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"server did not start; log: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", path)
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def kill(self):
        """kill -9 the master and every worker (its process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self):
        """A graceful stop (SIGTERM): workers close, compress their files."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def make_bodies(priv, n, per_batch=100, tag="x"):
    """n signed SendGrid batches (body, signature, timestamp)."""
    now = int(time.time())
    ts = str(now)
    out = []
    for b in range(n):
        events = [
            {
                "email": f"user{i}@example.com",
                "timestamp": now,
                "event": "delivered",
                "sg_event_id": f"{tag}-{b}-{i}",
                "sg_message_id": f"msg{b}-{i}.filter0001",
                "smtp-id": f"<msg{b}-{i}@example.com>",
                "category": ["load-test"],
                "response": "250 OK",
                "ip": "127.0.0.1",
            }
            for i in range(per_batch)
        ]
        body = json.dumps(events, separators=(",", ":")).encode()
        sig = base64.b64encode(priv.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        out.append((body, sig, ts))
    return out


def archived_lines(root: Path) -> list[bytes]:
    lines = []
    for p in sorted(root.rglob("*.json*")):
        data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        lines.extend(ln for ln in data.split(b"\n") if ln)
    return lines


def poster(port, items, results, stop: threading.Event | None = None, deadline=None):
    """Post items on one keep-alive connection; append (body, status, seconds) to results."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for body, sig, ts in items:
            if (stop is not None and stop.is_set()) or (deadline and time.monotonic() > deadline):
                return
            t = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    "/webhooks/sendgrid",
                    body=body,
                    headers={SIG_H: sig, TS_H: ts, "Content-Type": "application/json"},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                results.append((body, None, time.perf_counter() - t))
                return  # the server is gone
            results.append((body, resp.status, time.perf_counter() - t))
    finally:
        conn.close()


def test_load_concurrent_100_event_batches(tmp_path, signing_key):
    priv, pub = signing_key
    clients, per_client = 8, 40
    bodies = make_bodies(priv, clients * per_client, tag="load")
    server = Server(tmp_path / "archive", pub, tmp_path / "server.log")
    results: list = []
    try:
        start = time.perf_counter()
        deadline = time.monotonic() + 15
        threads = [
            threading.Thread(
                target=poster,
                args=(server.port, bodies[i::clients], results),
                kwargs={"deadline": deadline},
            )
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        elapsed = time.perf_counter() - start
        health = server.get("/healthz")["counters"]
    finally:
        server.stop()
    statuses = [s for _, s, _ in results]
    assert statuses and set(statuses) == {200}
    lat = sorted(d for _, _, d in results)
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"\nload: {len(results)} posts x 100 events ({len(bodies[0][0]) // 1024} KiB each), "
        f"{clients} concurrent clients, gunicorn 2 workers x 8 threads: "
        f"{len(results) / elapsed:.0f} requests/s ({len(results) * 100 / elapsed:.0f} events/s), "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert health["accepted"] == len(results)
    assert sorted(archived_lines(tmp_path / "archive")) == sorted(b for b, _, _ in results)
    assert not list((tmp_path / "archive").rglob("*.json.open"))  # graceful stop published them


def test_kill_9_loses_no_acknowledged_post(tmp_path, signing_key, cli):
    priv, pub = signing_key
    archive = tmp_path / "archive"
    clients = 6
    bodies = make_bodies(priv, clients * 200, per_batch=20, tag="crash")
    server = Server(archive, pub, tmp_path / "server.log")
    results: list = []
    stop = threading.Event()
    with ThreadPoolExecutor(clients) as pool:
        futures = [
            pool.submit(poster, server.port, bodies[i::clients], results, stop)
            for i in range(clients)
        ]
        # let posts flow, then pull the plug while they are in flight
        deadline = time.monotonic() + 10
        while len(results) < 150 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()
        stop.set()
        for f in futures:
            f.result(15)
    acked = [b for b, s, _ in results if s == 200]
    failed = [b for b, s, _ in results if s is None]
    assert len(acked) >= 100, f"only {len(acked)} posts acknowledged before the kill"
    assert all(s in (200, None) for _, s, _ in results)
    print(f"\nkill -9 after {len(acked)} acknowledged posts; {len(failed)} posts cut off in flight")

    lines = archived_lines(archive)
    assert set(acked) <= set(lines), "an acknowledged post is missing from the archive"
    assert len(set(lines)) == len(lines) <= len(acked) + len(failed)
    # every archived file, as the crash left it, reads without dead letters
    files = sorted(str(p) for p in archive.rglob("*.json*"))
    r = cli("normalize", "--provider", "sendgrid", *files)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == 20 * len(lines)
    # open files are invisible to a load until they are published: the next start takes
    # over the dead workers' files (compressed, nothing lost)
    assert list(archive.rglob("*.json.open"))
    server = Server(archive, pub, tmp_path / "server2.log")
    server.stop()
    assert not list(archive.rglob("*.json.open")) and list(archive.rglob("*.json.gz"))
    assert sorted(archived_lines(archive)) == sorted(lines)
    # and the load job reads every acknowledged post
    days = sorted({p.relative_to(archive / "sendgrid").parts[:3] for p in archive.rglob("*.json*")})
    loaded = 0
    for y, m, d in days:
        r = cli(
            "load",
            "--archive",
            archive,
            "--date",
            f"{y}-{m}-{d}",
            "--warehouse",
            f"duckdb:///{tmp_path / 'wh.duckdb'}",
            "--json",
            timeout=120,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        report = json.loads(r.stdout.strip().splitlines()[-1])
        assert report["dead_letters"] == 0, report
        loaded += report["events_loaded"]
    assert loaded == 20 * len(lines)
