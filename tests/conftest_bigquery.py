"""BigQuery test fixtures (a pytest plugin registered in tests/conftest.py).

- ``bq_emulator`` (session): the bqemulator package in its own venv, started once per
  session behind a :class:`RecordingProxy`; ``.url`` is what
  ``MAILPULSE_BIGQUERY_API_ENDPOINT`` should point at. Set ``MAILPULSE_SKIP_BIGQUERY=1``
  to skip BigQuery tests; otherwise a failing set-up fails them (CI must not skip silently).
- ``bq_dataset``: a fresh dataset per test, dropped afterwards.
- ``_partition_filter_guard`` (session, autouse): every SQL text the package sends, to
  BigQuery (``google.cloud.bigquery.Client.query``) or to the DuckDB backend
  (``DuckDBWarehouse.query`` / ``replace_partitions``, the same BigQuery SQL), is checked
  with ``assert_partition_filter``; a query over ``events`` without a filter on
  ``event_date`` fails the test that sent it. SQL written by tests themselves is exempt.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import bq_emulator as emu_mod  # tests/ is on sys.path (rootdir conftest)
import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
PROJECT = "test-project"

#: Warehouse functions that only pass SQL along: the SQL belongs to whoever called them.
CONDUITS = {
    "query",
    "query_df",
    "_run",
    "replace_partitions",
    "_create_derived",
    "estimate_bytes",
    "_guarded",
}

#: Every package SQL text checked this session (for reporting).
CHECKED_SQL: list[str] = []


def sql_origin(frames: list[tuple[str, str]]) -> str:
    """Who wrote the SQL: 'package' or 'test'. ``frames`` are (filename, function) from
    the innermost call outward. Library frames and warehouse conduits are skipped; the
    first remaining frame decides."""
    for filename, func in frames:
        path = Path(filename).resolve()
        try:
            rel = path.relative_to(ROOT)
        except ValueError:
            continue  # a library (google-cloud-bigquery, pytest, ...)
        if rel.parts[:1] == ("tests",):
            if path.name in ("conftest_bigquery.py",):
                continue
            return "test"
        if rel.parts[:2] == ("pipelines", "warehouse") and func in CONDUITS:
            continue
        return "package"
    return "test"


def _caller_frames(skip: int = 2) -> list[tuple[str, str]]:
    f = sys._getframe(skip)
    out = []
    while f is not None:
        out.append((f.f_code.co_filename, f.f_code.co_name))
        f = f.f_back
    return out


def _check(sql: str) -> None:
    if sql_origin(_caller_frames(3)) != "package":
        return
    from pipelines.warehouse.bigquery import assert_partition_filter

    CHECKED_SQL.append(sql)
    assert_partition_filter(sql)


@pytest.fixture(scope="session", autouse=True)
def _partition_filter_guard():
    from google.cloud import bigquery

    from pipelines.warehouse.duckdb import DuckDBWarehouse

    mp = pytest.MonkeyPatch()
    orig_query = bigquery.Client.query

    def client_query(self, query, *args, **kwargs):
        _check(query)
        return orig_query(self, query, *args, **kwargs)

    def wrap(name):
        orig = getattr(DuckDBWarehouse, name)

        def _guarded(self, *args, **kwargs):
            sql = args[0] if name == "query" else (args[1] if len(args) > 1 else kwargs["sql"])
            _check(sql)
            return orig(self, *args, **kwargs)

        _guarded.__name__ = _guarded.__qualname__ = "_guarded"
        return _guarded

    mp.setattr(bigquery.Client, "query", client_query)
    mp.setattr(DuckDBWarehouse, "query", wrap("query"))
    mp.setattr(DuckDBWarehouse, "replace_partitions", wrap("replace_partitions"))
    yield CHECKED_SQL
    mp.undo()


@dataclass
class BigQueryEndpoint:
    url: str  # the recording proxy in front of the emulator
    proxy: emu_mod.RecordingProxy
    emulator: emu_mod.Emulator
    project: str = PROJECT

    def client(self):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.emulator.url),
        )

    def new_warehouse(self):
        """A BigQueryWarehouse on a fresh, empty dataset (the emulator is per session)."""
        from pipelines.backoff import Backoff
        from pipelines.warehouse.bigquery import BigQueryWarehouse

        name = "t_" + uuid.uuid4().hex[:12]
        client = self.client()
        client.create_dataset(f"{self.project}.{name}")
        client.close()
        return BigQueryWarehouse(
            self.project,
            name,
            api_endpoint=self.url,
            retry=Backoff(initial=0.1, maximum=1.0, multiplier=2.0, deadline=20),
            job_timeout=120,
        )


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory):
    if os.environ.get("MAILPULSE_SKIP_BIGQUERY") == "1":
        pytest.skip("MAILPULSE_SKIP_BIGQUERY=1")
    emulator = emu_mod.start(tmp_path_factory.mktemp("bqemulator"), project=PROJECT)
    proxy = emu_mod.RecordingProxy(emulator.url)
    try:
        yield BigQueryEndpoint(proxy.url, proxy, emulator)
    finally:
        proxy.stop()
        emulator.stop()


@pytest.fixture
def bq_dataset(bq_emulator):
    """A fresh, empty dataset name in the emulator (dropped afterwards)."""
    name = "t_" + uuid.uuid4().hex[:12]
    client = bq_emulator.client()
    client.create_dataset(f"{PROJECT}.{name}")
    yield name
    client.delete_dataset(f"{PROJECT}.{name}", delete_contents=True, not_found_ok=True)
    client.close()
