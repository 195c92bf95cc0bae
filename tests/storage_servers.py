"""Real object-storage and queue servers for tests (a pytest plugin, see tests/conftest.py).

- ``moto_server`` (session): moto's standalone server (``python -m moto.server``, from the
  package registry) on a free loopback port: S3 and SQS. ``.env`` holds what a process
  needs to reach it through the standard AWS credential chain (``AWS_ENDPOINT_URL`` and a
  dummy key pair), ``.client(service)`` a boto3 client.
- ``gcs_server`` (session): ``gcp-storage-emulator`` (package registry), in memory, on a
  free loopback port; ``.env`` sets ``STORAGE_EMULATOR_HOST``, ``.client()`` a
  google-cloud-storage client.
- ``s3_bucket`` / ``gcs_bucket``: a fresh bucket per test, as ``s3://NAME`` / ``gs://NAME``,
  with the server's variables set in this process (``monkeypatch``) so in-process code
  and ``run_cli`` subprocesses (which inherit ``os.environ``) both reach it.
- ``sqs_queue``: a fresh queue per test; ``.url``.

Each server starts once per test run; a set-up failure fails the tests that use it
(CI must not skip silently).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

AWS_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url} server exited with {proc.returncode}:\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(
        f"{url} not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}"
    )


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_moto(log_dir: Path) -> Server:
    port = free_port()
    log = log_dir / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/moto-api/", proc, log)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
    }
    return Server(url, proc, env)


def start_gcs(log_dir: Path) -> Server:
    port = free_port()
    log = log_dir / "gcs-emulator.log"
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gcp_storage_emulator"]
    proc = subprocess.Popen(
        cmd + ["start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/storage/v1/b", proc, log)
    return Server(url, proc, {"STORAGE_EMULATOR_HOST": url})


class MotoServer(Server):
    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=AWS_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


class GCSServer(Server):
    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    s = start_moto(tmp_path_factory.mktemp("moto"))
    server = MotoServer(s.url, s.process, s.env)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    s = start_gcs(tmp_path_factory.mktemp("gcs"))
    server = GCSServer(s.url, s.process, s.env)
    yield server
    server.stop()


def unique_name(prefix: str = "mp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """The moto server's variables in this process (and so in ``run_cli`` children)."""
    for k, v in moto_server.env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    return dict(moto_server.env)


@pytest.fixture
def s3_bucket(moto_server, aws_env):
    name = unique_name()
    moto_server.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@dataclass
class Queue:
    url: str
    name: str


@pytest.fixture
def sqs_queue(moto_server, aws_env):
    name = unique_name("q")
    url = moto_server.client("sqs").create_queue(QueueName=name)["QueueUrl"]
    return Queue(url, name)


@pytest.fixture
def gcs_env(gcs_server, monkeypatch):
    for k, v in gcs_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return dict(gcs_server.env)


@pytest.fixture
def gcs_bucket(gcs_server, gcs_env):
    name = unique_name()
    gcs_server.client().create_bucket(name)
    return f"gs://{name}"


def upload_tree(local_root: Path, dest: str) -> list[str]:
    """Copy every file under ``local_root`` to ``dest`` (``s3://...`` or ``gs://...``) with
    the real clients; returns the object URIs written."""
    out = []
    scheme, rest = dest.split("://", 1)
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    for path in sorted(p for p in Path(local_root).rglob("*") if p.is_file()):
        key = "/".join(filter(None, [prefix, path.relative_to(local_root).as_posix()]))
        if scheme == "s3":
            import boto3

            boto3.client(
                "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=AWS_REGION
            ).upload_file(str(path), bucket, key)
        else:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            client = storage.Client(
                project="test-project",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
            )
            client.bucket(bucket).blob(key).upload_from_filename(str(path))
        out.append(f"{scheme}://{bucket}/{key}")
    return out
