"""The outcomes Python API (pipelines/outcomes.py) and the `mailpulse outcomes` /
`mailpulse history` commands, against real DuckDB files."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone

import pytest
from test_queries import event_from_json, load_events

from pipelines.outcomes import (
    COUNT_COLUMNS,
    RATE_COLUMNS,
    compute_outcomes,
    default_range,
    load_query,
    read_outcomes,
    read_suppressions,
)
from pipelines.warehouse import WarehouseError
from pipelines.warehouse.duckdb import DuckDBWarehouse

ALICE = "Alice.Smith@Example.com"


@pytest.fixture
def main(capsys):
    """``mailpulse`` in this process (fast); ``cli`` runs it as a subprocess."""
    from types import SimpleNamespace

    from pipelines.cli import main as cli_main

    def run(*args):
        rc = cli_main([str(a) for a in args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)

    return run


@pytest.fixture
def loaded(tmp_path, hasher):
    """A warehouse with a small, known set: Alice's SendGrid mail deferred then
    delivered and opened, her SES mail bounced; Bob's two-category mail delivered."""
    a, b = hasher.hash(ALICE), hasher.hash("bob@example.org")
    rows = [
        dict(
            event_type="processed",
            event_ts="2026-11-20T09:00:00Z",
            message_id="m1",
            email_hash=a,
            categories=["news"],
        ),
        dict(
            event_type="deferred",
            event_ts="2026-11-20T09:01:00Z",
            message_id="m1",
            email_hash=a,
            categories=["news"],
            reason="451 greylisted",
        ),
        dict(
            event_type="delivered",
            event_ts="2026-11-20T10:00:00Z",
            message_id="m1",
            email_hash=a,
            categories=["news"],
        ),
        dict(
            event_type="open",
            event_ts="2026-11-21T08:00:00Z",
            message_id="m1",
            email_hash=a,
            categories=["news"],
        ),
        dict(
            provider="ses",
            event_type="processed",
            event_ts="2026-11-21T09:00:00Z",
            message_id="s1",
            email_hash=a,
            categories=["receipt"],
        ),
        dict(
            provider="ses",
            event_type="bounce",
            bounce_class="hard",
            event_ts="2026-11-21T09:00:02Z",
            message_id="s1",
            email_hash=a,
            categories=["receipt"],
            reason="550 5.1.1 unknown user",
            smtp_status="5.1.1",
        ),
        dict(
            event_type="processed",
            event_ts="2026-11-20T09:00:00Z",
            message_id="m2",
            email_hash=b,
            categories=["news", "promo"],
        ),
        dict(
            event_type="delivered",
            event_ts="2026-11-20T09:00:05Z",
            message_id="m2",
            email_hash=b,
            categories=["news", "promo"],
        ),
    ]
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(
        wh, [event_from_json({"recipient_domain": "example.com", **r}) for r in rows], tmp_path
    )
    return wh


# -- Python API -------------------------------------------------------------------------
def test_compute_and_read_outcomes_with_a_uri_string(loaded):
    written = compute_outcomes(loaded.uri, date(2026, 11, 20), date(2026, 11, 21))
    assert written == {
        "recipient_status": 3,
        "delivery_outcomes": 4,
        "domain_outcomes": 4,
        "suppressions": 1,
    }
    df = read_outcomes(loaded.uri, date(2026, 11, 20), date(2026, 11, 21))
    assert list(df.columns[:3]) == ["event_date", "category", "provider"]
    assert set(COUNT_COLUMNS) | set(RATE_COLUMNS) <= set(df.columns)
    news = df[(df.category == "news") & (df.event_date == date(2026, 11, 20))].iloc[0]
    assert (news.requests, news.delivered, news.deferred, news.delivered_rate) == (2, 2, 1, 1.0)
    opened = df[(df.category == "news") & (df.event_date == date(2026, 11, 21))].iloc[0]
    assert (opened.opens, opened.unique_opens, opened.delivered) == (1, 1, 0)
    assert opened.open_rate != opened.open_rate  # NaN: nothing delivered that day


def test_compute_outcomes_replaces_only_its_partitions(loaded):
    compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    before = read_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    # recomputing one day leaves the other day alone, and gives the same rows
    compute_outcomes(loaded, date(2026, 11, 21), date(2026, 11, 21))
    after = read_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    assert before.equals(after)
    # a range with no events empties exactly that range
    assert compute_outcomes(loaded, date(2026, 12, 1), date(2026, 12, 2))["delivery_outcomes"] == 0
    assert read_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21)).equals(before)


def test_read_suppressions_one_row_per_recipient(loaded, hasher):
    compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    s = read_suppressions(loaded, date(2026, 11, 1), date(2026, 11, 30))
    assert list(s.email_hash) == [hasher.hash(ALICE)]
    assert list(s.reasons[0]) == ["hard_bounce"]
    assert s.first_seen[0] == datetime(2026, 11, 21, 9, 0, 2, tzinfo=timezone.utc)


def test_parameters_are_checked(loaded):
    with pytest.raises(ValueError, match="unknown parameter.*soft_bounce_treshold"):
        compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21), soft_bounce_treshold=2)
    with pytest.raises(ValueError, match="must be an integer"):
        compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21), soft_bounce_days="7")
    with pytest.raises(ValueError, match="swap"):
        compute_outcomes(loaded, date(2026, 11, 21), date(2026, 11, 20))


def test_read_before_compute_says_what_to_do(loaded):
    with pytest.raises(WarehouseError, match="mailpulse outcomes"):
        read_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))


def test_queries_folder_can_be_overridden(tmp_path, loaded):
    with pytest.raises(WarehouseError, match="no queries folder"):
        compute_outcomes(
            loaded, date(2026, 11, 20), date(2026, 11, 20), queries_dir=tmp_path / "nowhere"
        )
    q = load_query("delivery_outcomes")
    assert q.partition_column == "event_date" and q.cluster_by == ("category", "provider")
    assert q.parameters["days_read_before"] == ("INT64", 4)
    assert "SendGrid" in q.description


def test_default_range_is_a_four_day_window_ending_today():
    assert default_range(date(2026, 11, 23)) == (date(2026, 11, 20), date(2026, 11, 23))


# -- mailpulse outcomes -----------------------------------------------------------------
def test_outcomes_cli_json_csv_table(loaded, cli, main):
    args = ["outcomes", "--warehouse", loaded.uri, "--start", "2026-11-20", "--end", "2026-11-21"]
    # nothing computed yet: reading says how to compute
    res = main(*args)
    assert res.returncode == 2 and "outcomes --recompute" in res.stderr
    res = cli(*args, "--recompute", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    keys = {(r["event_date"], r["category"], r["provider"]) for r in rows}
    assert keys == {
        ("2026-11-20", "news", "sendgrid"),
        ("2026-11-20", "promo", "sendgrid"),
        ("2026-11-21", "news", "sendgrid"),
        ("2026-11-21", "receipt", "ses"),
    }
    receipt = next(r for r in rows if r["category"] == "receipt")
    assert receipt["bounces"] == receipt["bounces_hard"] == receipt["requests"] == 1
    assert receipt["open_rate"] is None and receipt["bounce_rate"] == 1.0
    assert all(set(COUNT_COLUMNS) <= set(r) for r in rows)

    # the rerun changes nothing, and CSV (read only) has the same rows
    res_csv = main(*args, "--recompute", "--format", "csv")
    assert res_csv.returncode == 0, res_csv.stderr
    csv_rows = list(csv.DictReader(io.StringIO(res_csv.stdout)))
    assert [
        (r["event_date"], r["category"], r["provider"], int(r["requests"]), int(r["delivered"]))
        for r in csv_rows
    ] == [
        (r["event_date"], r["category"], r["provider"], r["requests"], r["delivered"]) for r in rows
    ]

    res_table = main(*args)
    assert res_table.returncode == 0, res_table.stderr
    lines = res_table.stdout.splitlines()
    assert lines[0].startswith("Delivery outcomes 2026-11-20 .. 2026-11-21")
    news = next(line for line in lines if line.startswith("news "))
    # news: 2 requests, 2 delivered (100%), 1 deferred, 1 open by 1 recipient
    assert news.split()[:5] == ["news", "sendgrid", "2", "2", "100.0%"]
    assert "1 (1)" in news
    receipt_line = next(line for line in lines if line.startswith("receipt"))
    assert "1 (1/0/0/0)" in receipt_line and "0.0%" in receipt_line


def test_outcomes_cli_errors_name_the_fix(tmp_path, main):
    res = main("outcomes", "--warehouse", f"duckdb:///{tmp_path}/none.duckdb")
    assert res.returncode == 2
    assert "mailpulse load" in res.stderr
    assert not (tmp_path / "none.duckdb").exists()
    res = main(
        "outcomes",
        "--warehouse",
        f"duckdb:///{tmp_path}/none.duckdb",
        "--start",
        "2026-11-21",
        "--end",
        "2026-11-20",
    )
    assert res.returncode == 2 and "swap" in res.stderr


def test_outcomes_cli_default_range_and_warehouse(tmp_path, main, monkeypatch):
    """No dates: the embedded warehouse under MAILPULSE_DATA_DIR, the 4 days ending at the
    latest day with data (today here)."""
    today = datetime.now(timezone.utc).date()
    wh = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    evs = [
        event_from_json(
            dict(
                event_type=t,
                message_id="m",
                email_hash="h",
                categories=["c"],
                event_ts=f"{d.isoformat()}T00:00:01Z",
            )
        )
        for d, t in (
            (today - timedelta(days=4), "processed"),
            (today - timedelta(days=3), "processed"),
            (today, "processed"),
        )
    ]
    for i, e in enumerate(evs):
        e["message_id"] = f"m{i}"
    load_events(wh, evs, tmp_path)
    monkeypatch.setenv("MAILPULSE_DATA_DIR", str(tmp_path))
    res = main("outcomes", "--recompute", "--format", "json")
    assert res.returncode == 0, res.stderr
    dates = sorted(r["event_date"] for r in json.loads(res.stdout))
    assert dates == [(today - timedelta(days=3)).isoformat(), today.isoformat()]


def test_outcomes_reads_by_default_and_recomputes_only_when_asked(loaded, main, tmp_path, hasher):
    """Old data shows as itself (the window ends at its latest day, not today), and a
    plain `outcomes` never writes: events loaded later change nothing until --recompute."""
    res = main("outcomes", "--warehouse", loaded.uri, "--recompute", "--format", "json")
    assert res.returncode == 0, res.stderr
    first = json.loads(res.stdout)
    # data of 2026-11-20/21 only: the default window is 2026-11-18 .. 2026-11-21
    assert {r["event_date"] for r in first} == {"2026-11-20", "2026-11-21"}
    extra = [
        event_from_json(
            dict(
                event_type=t,
                message_id="m9",
                email_hash=hasher.hash("z@x.org"),
                categories=["news"],
                event_ts="2026-11-21T12:00:00Z",
                recipient_domain="x.org",
            )
        )
        for t in ("processed", "delivered")
    ]
    load_events(loaded, extra, tmp_path)
    res = main("outcomes", "--warehouse", loaded.uri, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == first  # read only: nothing recomputed
    table = main("outcomes", "--warehouse", loaded.uri)
    assert "recomputed:" not in table.stdout
    assert table.stdout.startswith("Delivery outcomes 2026-11-18 .. 2026-11-21")
    res = main("outcomes", "--warehouse", loaded.uri, "--recompute", "--format", "json")
    news = [
        r
        for r in json.loads(res.stdout)
        if (r["event_date"], r["category"]) == ("2026-11-21", "news")
    ]
    assert news and news[0]["requests"] == 1 and news[0]["delivered"] == 1
    res = main("outcomes", "--warehouse", loaded.uri, "--soft-bounce-days", "3")
    assert res.returncode == 2 and "add --recompute" in res.stderr


# -- mailpulse history ------------------------------------------------------------------
def test_history_cli(loaded, cli, main):
    res = cli(
        "history",
        "--email",
        "  alice.smith@EXAMPLE.com ",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--warehouse",
        loaded.uri,
        "--format",
        "json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [e["event_type"] for e in doc["events"]] == [
        "processed",
        "deferred",
        "delivered",
        "open",
        "processed",
        "bounce",
    ]
    assert {e["provider"] for e in doc["events"]} == {"sendgrid", "ses"}
    msgs = {m["message_id"]: m for m in doc["messages"]}
    assert msgs["m1"]["status"] == "delivered" and msgs["m1"]["settled"] is True
    assert msgs["s1"]["status"] == "bounce" and msgs["s1"]["reason"] == "550 5.1.1 unknown user"
    assert "alice" not in res.stdout.lower()  # JSON carries the hash, not the address

    res = main(
        "history",
        "--email",
        ALICE,
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--warehouse",
        loaded.uri,
    )
    assert res.returncode == 0, res.stderr
    assert "6 events, 2 messages" in res.stdout
    assert "reason='451 greylisted'" in res.stdout
    assert "bounce     (settled" in res.stdout

    # a partition filter: a --since after the events finds none
    res = main(
        "history",
        "--email",
        ALICE,
        "--since",
        "2026-11-22",
        "--until",
        "2026-11-30",
        "--warehouse",
        loaded.uri,
    )
    assert "0 events" in res.stdout and "MAILPULSE_HASH_KEY" in res.stdout


class RecordingWarehouse(DuckDBWarehouse):
    """The real DuckDB warehouse, remembering what was sent to it."""

    def __init__(self, path):
        super().__init__(path)
        self.sent: list = []

    def query(self, sql, params=None):
        self.sent.append((sql, dict(params or {})))
        return super().query(sql, params)


def test_history_sends_only_the_hash(loaded, hasher, capsys):
    from pipelines.cli import build_parser

    wh = RecordingWarehouse(loaded.path)
    args = build_parser().parse_args(
        [
            "history",
            "--email",
            ALICE,
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-30",
            "--format",
            "json",
        ]
    )
    args.warehouse = wh
    assert args._run(args) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 6
    ((sql, params),) = wh.sent
    assert params == {
        "since": date(2026, 11, 1),
        "until": date(2026, 11, 30),
        "email_hash": hasher.hash(ALICE),
    }
    assert "event_date BETWEEN @since AND @until" in sql
    assert "alice" not in (sql + json.dumps(params, default=str)).lower()


def test_history_rejects_a_non_address(main, tmp_path):
    res = main("history", "--email", "alice", "--warehouse", f"duckdb:///{tmp_path}/w.duckdb")
    assert res.returncode == 2 and "not an email address" in res.stderr
