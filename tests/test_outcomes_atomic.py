"""All derived tables of one outcomes run are replaced together, or not at all; and mail
that settles days after its first send event lands in its recipient_status partition.

Real DuckDB files, a real `mailpulse outcomes` subprocess killed with SIGKILL, and the
BigQuery emulator for the multi-table script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import duckdb
import pytest
from conftest import ROOT
from test_queries import event_from_json, load_events

from pipelines.outcomes import (
    TABLES,
    compute_outcomes,
    late_status_partitions,
    load_query,
    window_ending,
)
from pipelines.warehouse.base import PartitionReplacement
from pipelines.warehouse.duckdb import DuckDBWarehouse

D0 = date(2026, 11, 20)
D3 = D0 + timedelta(days=3)


def signature(path, table: str):
    """(rows, order-independent checksum) of a table, read-only."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            f'SELECT count(*), coalesce(sum(hash(CAST(t AS VARCHAR))), 0) FROM "{table}" AS t'
        ).fetchone()
    finally:
        con.close()


def signatures(path) -> dict[str, tuple]:
    return {t: signature(path, t) for t in TABLES}


#: Synthetic events made by SQL straight into ``events`` (big enough that each derived
#: table takes a noticeable time): @n recipients, each processed then delivered or
#: hard-bounced over four days, in 8 categories, over three providers.
EVENTS_SQL = """
INSERT INTO events
SELECT
  'e-' || $tag || '-' || i || '-' || k AS event_id,
  ['sendgrid', 'ses', 'cmc'][1 + i % 3] AS provider,
  CASE WHEN k = 0 THEN 'processed' WHEN i % $bounce_every = 0 THEN 'bounce' ELSE 'delivered' END,
  NULL,
  CASE WHEN k = 1 AND i % $bounce_every = 0 THEN 'hard' END,
  TIMESTAMPTZ '2026-11-20 00:00:00+00' + INTERVAL (i % 345600) SECOND + INTERVAL (k * 60) SECOND,
  CAST(TIMESTAMPTZ '2026-11-20 00:00:00+00' + INTERVAL (i % 345600) SECOND
       + INTERVAL (k * 60) SECOND AS DATE),
  'm-' || i, 'h-' || (i % ($n / 2)), 'example.com', ['cat-' || (i % 8)],
  CASE WHEN k = 1 AND i % $bounce_every = 0 THEN '550 5.1.1 unknown user' END,
  NULL, NULL, NULL, 'test://synthetic', now()
FROM range($n) AS r(i), range(2) AS s(k)
"""


def fill(path, n: int, bounce_every: int, tag: str = "a") -> None:
    DuckDBWarehouse(str(path)).ensure_schema()
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone='UTC'")
        con.execute(EVENTS_SQL, {"n": n, "bounce_every": bounce_every, "tag": tag})
    finally:
        con.close()


def rebounce(path, every: int) -> None:
    """Change the data so every derived table changes: more recipients bounce."""
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "UPDATE events SET event_type = 'bounce', bounce_class = 'hard', "
            "reason = '550 5.1.1 unknown user' "
            "WHERE event_type = 'delivered' AND CAST(split_part(message_id, '-', 2) "
            "AS BIGINT) % $every = 1",
            {"every": every},
        )
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_of_outcomes_leaves_all_tables_replaced_or_none(tmp_path):
    path = tmp_path / "w.duckdb"
    fill(path, 150_000, bounce_every=50)
    compute_outcomes(f"duckdb://{path}", D0, D3)
    before = signatures(path)
    rebounce(path, every=7)
    # what a complete run gives, on a copy
    expected_path = tmp_path / "expected.duckdb"
    expected_path.write_bytes(path.read_bytes())
    compute_outcomes(f"duckdb://{expected_path}", D0, D3)
    after = signatures(expected_path)
    assert all(before[t] != after[t] for t in TABLES), (before, after)

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "-v",
            "outcomes",
            "--warehouse",
            f"duckdb://{path}",
            "--start",
            D0.isoformat(),
            "--end",
            D3.isoformat(),
            "--recompute",
            "--format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    killed_at = None
    deadline = time.monotonic() + 240
    try:
        for line in proc.stderr:
            # the first derived table is written: kill before the others (and the commit)
            if "recipient_status" in line and "rows" in line:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = line.strip()
                break
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, "outcomes never reported its first table"
    assert proc.returncode == -signal.SIGKILL
    state = signatures(path)
    assert state in (before, after), {t: (before[t], state[t], after[t]) for t in TABLES}
    assert state == before, "killed before COMMIT: nothing is replaced"
    # a rerun completes the job
    compute_outcomes(f"duckdb://{path}", D0, D3)
    assert signatures(path) == after


def test_a_failing_item_replaces_nothing(tmp_path):
    path = tmp_path / "w.duckdb"
    fill(path, 2_000, bounce_every=10)
    compute_outcomes(f"duckdb://{path}", D0, D3)
    before = signatures(path)
    rebounce(path, every=3)
    wh = DuckDBWarehouse(str(path))
    q = load_query("delivery_outcomes")
    good = PartitionReplacement(q.table, q.sql, q.bind(D0, D3), D0, D3, q.partition_column)
    bad = PartitionReplacement(
        "suppressions",
        "SELECT event_date, no_such_column FROM events "
        "WHERE event_date BETWEEN @start_date AND @end_date",
        {"start_date": D0, "end_date": D3},
        D0,
        D3,
    )
    with pytest.raises(duckdb.Error):
        wh.replace_partitions_many([good, bad])
    assert signatures(path) == before


def test_replace_partitions_many_on_bigquery_is_one_script(bq_emulator, tmp_path, hasher):
    wh = bq_emulator.new_warehouse()
    h = hasher.hash("ann@example.com")
    rows = [
        dict(
            event_type="processed",
            event_ts="2026-11-20T09:00:00Z",
            message_id="m1",
            email_hash=h,
            categories=["news"],
        ),
        dict(
            event_type="bounce",
            bounce_class="hard",
            event_ts="2026-11-20T09:00:05Z",
            message_id="m1",
            email_hash=h,
            categories=["news"],
            reason="550 gone",
        ),
    ]
    load_events(
        wh, [event_from_json({"recipient_domain": "example.com", **r}) for r in rows], tmp_path
    )
    from test_bigquery_warehouse import _jobs

    mark = bq_emulator.proxy.mark()
    written = compute_outcomes(wh, D0, D0)
    assert written == {
        "recipient_status": 1,
        "delivery_outcomes": 1,
        "domain_outcomes": 1,
        "suppressions": 1,
    }
    scripts = [
        j["configuration"]["query"]["query"]
        for j in _jobs(bq_emulator.proxy.since(mark))
        if "BEGIN TRANSACTION" in j["configuration"].get("query", {}).get("query", "")
    ]
    assert len(scripts) == 1  # one transaction for the three tables
    script = scripts[0]
    assert all(script.count(f"DELETE FROM `{t}` ") == 1 for t in TABLES), script
    assert script.rstrip().endswith("COMMIT TRANSACTION;") and "@" not in script
    # staging tables are gone
    names = {t.table_id for t in bq_emulator.client().list_tables(f"{wh.project}.{wh.dataset}")}
    assert not any(n.startswith("_mp_stage_") for n in names)
    again = compute_outcomes(wh, D0, D0)
    assert again == written
    status = wh.query(
        "SELECT status FROM recipient_status WHERE event_date = @d", {"d": D0}
    ).to_pylist()
    assert status == [{"status": "bounce"}]
    # a failing item: nothing replaced, the previous rows stay
    q = load_query("delivery_outcomes")
    bad = PartitionReplacement(
        "suppressions",
        "SELECT event_date, no_such_column FROM events "
        "WHERE event_date BETWEEN @start_date AND @end_date",
        {"start_date": D0, "end_date": D0},
        D0,
        D0,
    )
    with pytest.raises(Exception):
        wh.replace_partitions_many(
            [
                PartitionReplacement(
                    q.table,
                    "SELECT * FROM delivery_outcomes WHERE FALSE",
                    {},
                    D0,
                    D0,
                    q.partition_column,
                ),
                bad,
            ]
        )
    assert wh.query(
        "SELECT COUNT(*) AS n FROM delivery_outcomes WHERE event_date = @d", {"d": D0}
    ).to_pylist() == [{"n": 1}]


# -- late settlement ---------------------------------------------------------------------


def test_late_settlement_lands_in_the_first_send_partition(tmp_path, hasher):
    """Deferred on D at 22:00, delivered or bounced 71 h later (D+3): the row lives in
    partition D, outside a one-day window ending D+3; late_status_partitions finds D."""
    rows = []
    for i in range(10):
        h = hasher.hash(f"r{i}@example.com")
        sent = datetime(2026, 11, 20, 22, 0, tzinfo=timezone.utc)
        rows.append(dict(event_type="processed", event_ts=sent, message_id=f"m{i}", email_hash=h))
        rows.append(
            dict(
                event_type="deferred",
                event_ts=sent + timedelta(minutes=1),
                message_id=f"m{i}",
                email_hash=h,
                reason="421 try later",
            )
        )
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))

    def ev(r):
        r = dict(r, event_ts=r["event_ts"].isoformat().replace("+00:00", "Z"))
        return event_from_json({"recipient_domain": "example.com", "categories": ["c"], **r})

    load_events(wh, [ev(r) for r in rows], tmp_path)
    for day in range(4):  # daily runs with a one-day window
        d = D0 + timedelta(days=day)
        compute_outcomes(wh, d, d, status_partitions=late_status_partitions(wh, d, d))
    late = []
    for i in range(10):
        h = hasher.hash(f"r{i}@example.com")
        t = datetime(2026, 11, 20, 22, 1, tzinfo=timezone.utc) + timedelta(hours=71)
        late.append(
            dict(
                event_type="bounce" if i < 2 else "delivered",
                event_ts=t,
                message_id=f"m{i}",
                email_hash=h,
                **({"bounce_class": "hard"} if i < 2 else {}),
            )
        )
    load_events(wh, [ev(r) for r in late], tmp_path)
    d = D3
    assert late_status_partitions(wh, d, d) == [D0]
    # without the late partitions, the window alone leaves them deferred ...
    compute_outcomes(wh, d, d)
    assert wh.query(
        "SELECT status, COUNT(*) AS n FROM recipient_status GROUP BY status ORDER BY status"
    ).to_pylist() == [{"status": "deferred", "n": 10}]
    # ... with them, the settled status lands in partition D
    written = compute_outcomes(wh, d, d, status_partitions=late_status_partitions(wh, d, d))
    assert written["recipient_status"] == 10
    assert wh.query(
        "SELECT event_date, status, COUNT(*) AS n FROM recipient_status "
        "GROUP BY ALL ORDER BY status"
    ).to_pylist() == [
        {"event_date": D0, "status": "bounce", "n": 2},
        {"event_date": D0, "status": "delivered", "n": 8},
    ]


def test_window_names():
    assert window_ending(D3) == (D0, D3)
    assert window_ending(D3, 1) == (D3, D3)
    with pytest.raises(ValueError, match="window_days"):
        window_ending(D3, 0)
    for t in ("delivery_outcomes", "recipient_status"):
        names = set(load_query(t).parameters)
        assert "days_read_before" in names and not any("lookback" in n for n in names)
    with pytest.warns(DeprecationWarning, match="days_read_after"):
        with pytest.raises(Exception):  # the warning comes first; no warehouse here
            compute_outcomes(
                "duckdb:///nonexistent/dir/w.duckdb",
                D0,
                D0,
                lookahead_days=5,
                tables=("no_such_table",),
            )
