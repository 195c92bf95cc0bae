"""One contract for the warehouse interface, run on DuckDB (a file) and on BigQuery (the
real google-cloud-bigquery client against the bqemulator package, a fresh dataset per test)."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.backoff import Backoff
from pipelines.events import dead_letters_to_arrow, events_to_arrow
from pipelines.warehouse.base import LoadBatch
from pipelines.warehouse.bigquery import BigQueryWarehouse
from pipelines.warehouse.duckdb import DuckDBWarehouse

#: short API retries against the emulator (jobs keep the default timeout)
TEST_RETRY = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, deadline=20)
D1, D2, D3 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)
SPAN = {"lo": date(2026, 1, 1), "hi": date(2026, 1, 31)}


def ev(
    event_id,
    day,
    hour=10,
    provider="sendgrid",
    event_type="delivered",
    message_id="m1",
    email_hash="h1",
    categories=("welcome",),
    source="archive/a.json",
):
    ts = datetime(day.year, day.month, day.day, hour, 0, 0, tzinfo=timezone.utc)
    return {
        "event_id": event_id,
        "provider": provider,
        "event_type": event_type,
        "provider_event_type": event_type,
        "bounce_class": None,
        "event_ts": ts,
        "event_date": day,
        "message_id": message_id,
        "email_hash": email_hash,
        "recipient_domain": "example.com",
        "categories": list(categories),
        "reason": None,
        "smtp_status": None,
        "url": None,
        "attempt": None,
        "source_uri": source,
        "ingested_at": datetime(2026, 1, 8, tzinfo=timezone.utc),
    }


def dl(source, line, idx=0, provider="ses", reason="not JSON"):
    return {
        "source_uri": source,
        "line": line,
        "record_index": idx,
        "provider": provider,
        "reason": reason,
        "raw": "{oops",
        "event_date": D1,
        "load_id": "x",
        "ingested_at": datetime(2026, 1, 8, tzinfo=timezone.utc),
    }


def make_batch(tmp: Path, load_id: str, event_groups, dead=(), stats=None) -> LoadBatch:
    tmp.mkdir(parents=True, exist_ok=True)
    ev_files, dl_files = [], []
    for i, group in enumerate(event_groups):
        p = tmp / f"{load_id}-events-{i}.parquet"
        pq.write_table(events_to_arrow(list(group)), p)
        ev_files.append(str(p))
    if dead:
        p = tmp / f"{load_id}-dead.parquet"
        pq.write_table(dead_letters_to_arrow(list(dead)), p)
        dl_files.append(str(p))
    return LoadBatch(
        load_id=load_id,
        archive="archive/",
        archive_date=D1,
        started_at=datetime(2026, 1, 8, tzinfo=timezone.utc),
        event_files=ev_files,
        dead_letter_files=dl_files,
        stats=stats or {},
        files_read=len(ev_files),
    )


FIRST = [
    [
        ev("e1", D1),
        ev("e2", D1, 11),
        ev("e3", D2, provider="sendgrid", event_type="bounce"),
        ev("s1", D1, provider="ses", message_id="m2", email_hash="h2"),
    ],
    [
        ev("e2", D1, 11, source="archive/b.json"),
        ev("s2", D2, provider="ses", message_id="m2", categories=()),
    ],
]
DEAD = [dl("archive/c.json", 3), dl("archive/c.json", 3), dl("archive/c.json", 4, 1, None)]


def open_backend(kind, request, tmp_path):
    if kind == "duckdb":
        return DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    ep = request.getfixturevalue("bq_emulator")
    ds = request.getfixturevalue("bq_dataset")
    return BigQueryWarehouse("test-project", ds, api_endpoint=ep.url, retry=TEST_RETRY)


@pytest.fixture(params=["duckdb", pytest.param("bigquery", marks=pytest.mark.bigquery)])
def wh(request, tmp_path):
    w = open_backend(request.param, request, tmp_path)
    yield w
    w.close()


def events_rows(wh, lo=SPAN["lo"], hi=SPAN["hi"]):
    t = wh.query(
        "SELECT * FROM events WHERE event_date BETWEEN @lo AND @hi ORDER BY event_id",
        {"lo": lo, "hi": hi},
    )
    return t.to_pylist()


def test_ensure_schema_is_idempotent(wh):
    wh.ensure_schema()
    wh.ensure_schema()
    type(wh).ensure_schema(wh.__class__.from_uri(wh.uri, **_same_endpoint(wh)))
    assert all(wh.table_exists(t) for t in ("events", "dead_letters", "loads"))
    assert not wh.table_exists("no_such_table")
    assert events_rows(wh) == []


def _same_endpoint(wh):
    return (
        {"api_endpoint": wh.api_endpoint, "retry": TEST_RETRY} if wh.dialect == "bigquery" else {}
    )


def test_commit_load_inserts_dedupes_and_is_idempotent(wh, tmp_path):
    r1 = wh.commit_load(make_batch(tmp_path, "load-1", FIRST, DEAD))
    assert r1.per_provider["sendgrid"] == {
        "events_loaded": 3,
        "duplicates_in_batch": 1,
        "already_loaded": 0,
    }
    assert r1.per_provider["ses"] == {
        "events_loaded": 2,
        "duplicates_in_batch": 0,
        "already_loaded": 0,
        "dead_letters_stored": 1,
    }
    assert r1.per_provider[""] == {"dead_letters_stored": 1}
    rows = events_rows(wh)
    assert [r["event_id"] for r in rows] == ["e1", "e2", "e3", "s1", "s2"]
    assert rows[0]["categories"] == ["welcome"] and rows[4]["categories"] == []
    assert rows[0]["event_ts"] == datetime(2026, 1, 5, 10, tzinfo=timezone.utc)

    # The same archive again: nothing new, and the counts say why.
    r2 = wh.commit_load(make_batch(tmp_path, "load-2", FIRST, DEAD))
    assert r2.per_provider["sendgrid"] == {
        "events_loaded": 0,
        "duplicates_in_batch": 1,
        "already_loaded": 3,
    }
    assert r2.per_provider["ses"]["already_loaded"] == 2
    assert all(p.get("dead_letters_stored", 0) == 0 for p in r2.per_provider.values())
    assert len(events_rows(wh)) == 5

    # Overlapping batch: one new event, one already loaded (SendGrid retried a webhook).
    r3 = wh.commit_load(
        make_batch(tmp_path, "load-3", [[ev("e3", D2, event_type="bounce"), ev("e4", D3)]])
    )
    assert r3.per_provider["sendgrid"] == {
        "events_loaded": 1,
        "duplicates_in_batch": 0,
        "already_loaded": 1,
    }
    assert [r["event_id"] for r in events_rows(wh)] == ["e1", "e2", "e3", "e4", "s1", "s2"]

    dead = wh.query(
        "SELECT source_uri, line, record_index, provider FROM dead_letters ORDER BY line"
    ).to_pylist()
    assert dead == [
        {"source_uri": "archive/c.json", "line": 3, "record_index": 0, "provider": "ses"},
        {"source_uri": "archive/c.json", "line": 4, "record_index": 1, "provider": None},
    ]
    loads = wh.query(
        "SELECT load_id, status, events_loaded, already_loaded, "
        "duplicates_in_batch, per_provider FROM loads ORDER BY load_id"
    ).to_pylist()
    assert [
        (r["load_id"], r["status"], r["events_loaded"], r["already_loaded"]) for r in loads
    ] == [
        ("load-1", "succeeded", 5, 0),
        ("load-2", "succeeded", 0, 5),
        ("load-3", "succeeded", 1, 1),
    ]
    assert json.loads(loads[0]["per_provider"])["sendgrid"]["duplicates_in_batch"] == 1


def test_commit_load_of_an_empty_batch_writes_only_the_loads_row(wh, tmp_path):
    r = wh.commit_load(make_batch(tmp_path, "empty", []))
    assert r.per_provider == {}
    assert wh.query("SELECT COUNT(*) AS n FROM loads").to_pylist() == [{"n": 1}]
    assert events_rows(wh) == []


def test_query_parameters_of_every_type(wh, tmp_path):
    wh.commit_load(make_batch(tmp_path, "load-1", FIRST))
    params = {
        "s": "sendgrid",
        "i": 2,
        "f": 0.5,
        "b": True,
        "d": D1,
        "t": datetime(2026, 1, 5, 10, 30, tzinfo=timezone.utc),
        "ids": ["m1", "zz"],
    }
    echo = wh.query(
        "SELECT @s AS s, @i AS i, @f AS f, @b AS b, @d AS d, @t AS t, ARRAY_LENGTH(@ids) AS n",
        params,
    ).to_pylist()
    assert echo == [
        {"s": "sendgrid", "i": 2, "f": 0.5, "b": True, "d": D1, "t": params["t"], "n": 2}
    ]
    rows = wh.query(
        "SELECT event_id FROM events WHERE event_date BETWEEN @d AND DATE_ADD(@d, INTERVAL 1 DAY) "
        "AND provider = @s AND message_id IN UNNEST(@ids) AND event_ts > @t AND @b "
        "AND @i > 1 AND @f < 1.0 ORDER BY event_id",
        params,
    ).to_pylist()
    assert rows == [{"event_id": "e2"}, {"event_id": "e3"}]
    none = wh.query(
        "SELECT COUNT(*) AS n FROM events WHERE event_date = @d AND message_id IN UNNEST(@ids)",
        {"d": D1, "ids": []},
    ).to_pylist()
    assert none == [{"n": 0}]


DAILY = (
    "SELECT event_date, provider, COUNT(*) AS n FROM events "
    "WHERE event_date BETWEEN @start AND @end GROUP BY event_date, provider"
)


def _daily(wh):
    return [
        (r["event_date"], r["provider"], r["n"])
        for r in wh.query(
            "SELECT * FROM daily WHERE event_date BETWEEN @lo AND @hi "
            "ORDER BY event_date, provider",
            SPAN,
        ).to_pylist()
    ]


def test_replace_partitions_replaces_only_the_range_and_is_idempotent(wh, tmp_path):
    wh.commit_load(make_batch(tmp_path, "load-1", FIRST))
    n = wh.replace_partitions(
        "daily", DAILY, {"start": D1, "end": D2}, D1, D2, cluster_by=("provider",)
    )
    assert n == 4
    assert wh.table_exists("daily")
    before = _daily(wh)
    assert before == [(D1, "sendgrid", 2), (D1, "ses", 1), (D2, "sendgrid", 1), (D2, "ses", 1)]

    # Late events for D2 and D3 arrive; replacing D2 only leaves D1 and D3 alone.
    wh.commit_load(make_batch(tmp_path, "load-2", [[ev("e5", D2), ev("e6", D3)]]))
    assert (
        wh.replace_partitions(
            "daily", DAILY, {"start": D1, "end": D3}, D2, D2, cluster_by=("provider",)
        )
        == 2
    )
    after = _daily(wh)
    assert after == [(D1, "sendgrid", 2), (D1, "ses", 1), (D2, "sendgrid", 2), (D2, "ses", 1)]
    # Rerun: same result, nothing doubled.
    assert (
        wh.replace_partitions(
            "daily", DAILY, {"start": D1, "end": D3}, D2, D2, cluster_by=("provider",)
        )
        == 2
    )
    assert _daily(wh) == after
    assert wh.replace_partitions("daily", DAILY, {"start": D1, "end": D3}, D1, D3) == 5
    assert _daily(wh)[-1] == (D3, "sendgrid", 1)


@pytest.mark.bigquery
def test_both_backends_store_the_same_rows(request, tmp_path):
    duck = open_backend("duckdb", request, tmp_path)
    bq = open_backend("bigquery", request, tmp_path)
    results = []
    for wh in (duck, bq):
        r1 = wh.commit_load(make_batch(tmp_path / wh.dialect, "load-1", FIRST, DEAD))
        r2 = wh.commit_load(make_batch(tmp_path / wh.dialect, "load-2", FIRST, DEAD))
        dead = wh.query("SELECT * FROM dead_letters ORDER BY source_uri, line, record_index")
        loads = wh.query("SELECT * EXCEPT (finished_at) FROM loads ORDER BY load_id")
        results.append(
            (r1.per_provider, r2.per_provider, events_rows(wh), dead.to_pylist(), loads.to_pylist())
        )
    assert results[0] == results[1]
