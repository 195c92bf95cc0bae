"""Cost: every query over ``events`` the package sends filters on ``event_date``.

Three nets: the checker itself; every SQL file in queries/; and, at run time, every SQL
text the package hands to BigQuery or DuckDB during the test session (the session-wide
guard in conftest_bigquery.py fails the test that sent an unfiltered query), plus all SQL
recorded on the wire during a full load/replace/query cycle here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_bigquery import ROOT, sql_origin

from pipelines.warehouse.bigquery import (
    PartitionFilterError,
    assert_partition_filter,
    partition_filter_violations,
)

GOOD = [
    "SELECT * FROM events WHERE event_date BETWEEN @start AND @end",
    "SELECT e.* FROM `p.d.events` AS e JOIN x ON x.id = e.message_id "
    "WHERE e.event_date >= @start AND e.provider = 'ses'",
    "SELECT 1 FROM s WHERE NOT EXISTS (SELECT 1 FROM events AS e "
    "WHERE e.event_date BETWEEN @lo AND @hi AND e.event_id = s.event_id)",
    "WITH recent AS (SELECT * FROM events WHERE event_date = @d) SELECT COUNT(*) FROM recent",
    "MERGE events AS T USING s AS S ON T.event_date BETWEEN lo AND hi AND T.event_id = S.event_id "
    "WHEN NOT MATCHED THEN INSERT (event_id) VALUES (S.event_id)",
    "SELECT * FROM x JOIN events ON events.event_date = x.d AND events.event_id = x.id",
    "DELETE FROM events WHERE event_date IN (@a, @b)",
    "SELECT * FROM delivery_outcomes",  # other tables are not checked
]
BAD = [
    "SELECT * FROM events",
    "SELECT * FROM events WHERE provider = @p",
    "SELECT * FROM events WHERE event_date = @d OR provider = 'ses'",  # OR defeats pruning
    "SELECT * FROM events AS e WHERE other.event_date = @d",
    "WITH a AS (SELECT * FROM events WHERE event_date = @d) "
    "SELECT * FROM a JOIN events ON events.event_id = a.event_id",
    "SELECT * FROM (SELECT * FROM events) WHERE event_date = @d",
    "MERGE events AS T USING s AS S ON T.event_id = S.event_id "
    "WHEN NOT MATCHED THEN INSERT (event_id) VALUES (S.event_id)",
]


@pytest.mark.parametrize("sql", GOOD)
def test_filtered_sql_passes(sql):
    assert partition_filter_violations(sql) == []


@pytest.mark.parametrize("sql", BAD)
def test_unfiltered_sql_fails(sql):
    with pytest.raises(PartitionFilterError, match="event_date"):
        assert_partition_filter(sql)


QUERY_FILES = sorted((ROOT / "queries").glob("**/*.sql"))


@pytest.mark.parametrize("path", QUERY_FILES, ids=[str(p.relative_to(ROOT)) for p in QUERY_FILES])
def test_every_sql_file_in_queries_filters_events(path: Path):
    assert_partition_filter(path.read_text(encoding="utf-8"))


def test_origin_of_sql_is_told_by_the_calling_frame():
    pkg = str(ROOT / "pipelines" / "watch.py")
    wh = str(ROOT / "pipelines" / "warehouse" / "bigquery.py")
    lib = "/usr/lib/python3/site-packages/google/cloud/bigquery/client.py"
    test = str(ROOT / "tests" / "test_x.py")
    assert (
        sql_origin([(lib, "query"), (wh, "_run"), (wh, "query"), (pkg, "wait"), (test, "test_a")])
        == "package"
    )
    assert sql_origin([(lib, "query"), (wh, "_run"), (wh, "query"), (test, "test_a")]) == "test"
    assert (
        sql_origin([(lib, "query"), (wh, "_run"), (wh, "_count_new_events"), (test, "test_a")])
        == "package"
    )


def test_the_session_guard_fails_package_sql_without_a_partition_filter(tmp_path):
    """Code under pipelines/ that queries events without event_date fails its test."""
    from pipelines.warehouse.duckdb import DuckDBWarehouse

    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    wh.ensure_schema()
    src = (
        "def count_all(wh):\n"
        "    return wh.query('SELECT COUNT(*) AS n FROM events')\n"
        "def count_day(wh, d):\n"
        "    return wh.query('SELECT COUNT(*) AS n FROM events WHERE event_date = @d', {'d': d})\n"
    )
    ns: dict = {}
    # compiled as if it lived in the package, which is how the guard tells package SQL
    exec(compile(src, str(ROOT / "pipelines" / "_guard_probe.py"), "exec"), ns)
    with pytest.raises(PartitionFilterError):
        ns["count_all"](wh)
    from datetime import date

    assert ns["count_day"](wh, date(2026, 1, 5)).to_pylist() == [{"n": 0}]
    # a test's own ad-hoc SQL is not the package's and is allowed
    assert wh.query("SELECT COUNT(*) AS n FROM events").to_pylist() == [{"n": 0}]


@pytest.mark.bigquery
def test_every_query_sent_in_a_full_cycle_filters_events(bq_emulator, bq_dataset, tmp_path):
    from test_warehouse_contract import D1, D2, DAILY, DEAD, FIRST, TEST_RETRY, make_batch

    from pipelines.warehouse.bigquery import BigQueryWarehouse

    wh = BigQueryWarehouse(
        "test-project", bq_dataset, api_endpoint=bq_emulator.url, retry=TEST_RETRY
    )
    mark = bq_emulator.proxy.mark()
    wh.commit_load(make_batch(tmp_path, "l1", FIRST, DEAD))
    wh.commit_load(make_batch(tmp_path, "l2", FIRST, DEAD))
    wh.replace_partitions("daily", DAILY, {"start": D1, "end": D2}, D1, D2)
    sent = [r.query for r in bq_emulator.proxy.since(mark) if r.query]
    over_events = [q for q in sent if "events" in q.replace("dead_letters", "")]
    assert len(over_events) >= 5  # counting x2, commit script x2, the derived table's MERGE
    for q in sent:
        assert_partition_filter(q)
