"""Shared fixtures. Tests run against real components (DuckDB files, the BigQuery
emulator, Airflow, slack_sdk against a local server); see each test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Customers Mail Cloud webhook bodies from a public write-up of its webhooks (the
#: same five files as shared/provider-samples/cmc), kept in the repo so tests need
#: nothing outside the clone.
SAMPLES = ROOT / "tests" / "payloads" / "provider-samples"
TEST_HASH_KEY = "test-hash-key-0123456789"

# The slack_server fixture (tests/slack_server.py); the BigQuery emulator fixtures and
# the session-wide partition-filter guard; moto (S3, SQS) and the GCS emulator (tests/storage_servers.py).
pytest_plugins = ["conftest_slack", "conftest_bigquery", "storage_servers"]


@pytest.fixture(autouse=True)
def _hash_key(monkeypatch):
    """Every test runs with a known hash key (so no dev-key warning) and UTC."""
    monkeypatch.setenv("MAILPULSE_HASH_KEY", TEST_HASH_KEY)
    monkeypatch.setenv("TZ", "UTC")


@pytest.fixture
def hasher():
    from pipelines.hashing import EmailHasher

    return EmailHasher(TEST_HASH_KEY)


@pytest.fixture
def ctx(hasher):
    from pipelines.normalizers import NormalizeSettings

    return NormalizeSettings(hasher=hasher, source_uri="test://payload")


def run_cli(*args, env=None, input=None, cwd=None, timeout=600):
    """Run ``mailpulse`` as a user would (a subprocess), returning CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
