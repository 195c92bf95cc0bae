"""End to end: an archive -> `mailpulse load --warehouse bigquery://...` (a subprocess, the
real client, the emulator) -> rows in the emulator; a rerun adds nothing; the counts and
rows are the ones DuckDB gets from the same archive."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import run_cli
from test_load import archive  # noqa: F401 - the fixture: every kind of record, one day
from test_warehouse_contract import TEST_RETRY

from pipelines.warehouse import open_warehouse
from pipelines.warehouse.bigquery import ENDPOINT_ENV, assert_partition_filter

pytestmark = [pytest.mark.bigquery, pytest.mark.slow]
DAY = "2026-11-20"
SPAN = {"lo": date(2026, 11, 1), "hi": date(2026, 11, 30)}
VOLATILE = {"load_id", "warehouse", "seconds", "started_at", "staging", "events_per_second"}


def _load(archive, warehouse, env, tmp_path, *extra):
    r = run_cli(
        "load",
        "--archive",
        archive,
        "--date",
        DAY,
        "--warehouse",
        warehouse,
        "--staging",
        tmp_path / "staging",
        "--json",
        *extra,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return {k: v for k, v in doc.items() if k not in VOLATILE}


def _events(wh):
    rows = wh.query(
        "SELECT * EXCEPT (ingested_at) FROM events "
        "WHERE event_date BETWEEN @lo AND @hi ORDER BY event_id",
        SPAN,
    ).to_pylist()
    return rows


def test_load_into_bigquery_matches_duckdb_and_reruns_add_nothing(
    archive,
    tmp_path,  # noqa: F811
    bq_emulator,
    bq_dataset,
):
    env = {ENDPOINT_ENV: bq_emulator.url}
    duck_uri = f"duckdb://{tmp_path}/w.duckdb"
    bq_uri = f"bigquery://test-project/{bq_dataset}"

    duck = _load(archive, duck_uri, {}, tmp_path)
    mark = bq_emulator.proxy.mark()
    first = _load(archive, bq_uri, env, tmp_path)
    assert first["events_loaded"] > 0 and first["adds_up"] is True
    assert first == duck  # same counts, per provider too

    # the loaded_files manifest on BigQuery: a rerun reads no file
    idle = _load(archive, bq_uri, env, tmp_path)
    assert (idle["files_read"], idle["files_skipped"]) == (0, first["files_read"])
    assert idle["records_read"] == 0
    manifest = (
        open_warehouse(bq_uri, api_endpoint=bq_emulator.url, retry=TEST_RETRY)
        .query("SELECT source_uri, records FROM loaded_files")
        .to_pylist()
    )
    assert len(manifest) == first["files_read"]
    assert sum(m["records"] for m in manifest) == first["records_read"]
    # --full reads everything again; nothing new is stored
    again = _load(archive, bq_uri, env, tmp_path, "--full")
    assert again["events_loaded"] == 0
    assert again["already_loaded"] == first["events_loaded"]
    assert again["records_read"] == first["records_read"]

    bq = open_warehouse(bq_uri, api_endpoint=bq_emulator.url, retry=TEST_RETRY)
    dk = open_warehouse(duck_uri)
    bq_rows = _events(bq)
    assert len(bq_rows) == first["events_loaded"]
    assert bq_rows == _events(dk)
    n = "SELECT COUNT(*) AS n FROM {}"
    assert (
        bq.query(n.format("dead_letters")).to_pylist()
        == dk.query(n.format("dead_letters")).to_pylist()
    )
    loads = bq.query(
        "SELECT events_loaded, already_loaded, runner FROM loads "
        "ORDER BY events_loaded DESC, already_loaded DESC"
    ).to_pylist()
    assert loads == [
        {"events_loaded": first["events_loaded"], "already_loaded": 0, "runner": first["runner"]},
        {"events_loaded": 0, "already_loaded": first["events_loaded"], "runner": first["runner"]},
        {"events_loaded": 0, "already_loaded": 0, "runner": first["runner"]},
    ]

    # Everything the CLI sent over the wire, checked for partition filters on events.
    sent = [r.query for r in bq_emulator.proxy.since(mark) if r.query]
    assert any("MERGE events" in q for q in sent)
    for q in sent:
        assert_partition_filter(q)
