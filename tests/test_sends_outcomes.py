"""`mailpulse outcomes --by send` / `--send-id ID` (pipelines/sends.py read_send_outcomes,
read_send_recipients, summarize_sends): per send, sent / reported / never reported and
how the sent recipients ended, on a real DuckDB file and on the BigQuery emulator, with
events loaded through the warehouse's real load (commit_load) and sends through
record_sends. Read-only on both backends."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest
from conftest import TEST_HASH_KEY
from test_queries import BACKENDS, event_from_json, load_events

from pipelines.hashing import EmailHasher
from pipelines.sends import (
    SEND_COUNT_COLUMNS,
    read_send_outcomes,
    read_send_recipients,
    record_sends,
    summarize_sends,
)

HASHER = EmailHasher(TEST_HASH_KEY)
UTC = timezone.utc
SENT = "2026-11-20T10:00:00Z"

#: spring-1 (category sale, no message ids): address -> its events (type, time, extra)
SPRING = {
    "a@gmail.com": [
        ("processed", "2026-11-20T10:00:01Z", {}),
        ("deferred", "2026-11-20T10:00:02Z", {"reason": "451 greylisted"}),
        ("delivered", "2026-11-20T11:00:00Z", {}),
        ("open", "2026-11-21T08:00:00Z", {}),
        ("click", "2026-11-21T08:01:00Z", {}),
    ],
    "b@gmail.com": [
        ("processed", "2026-11-20T10:00:01Z", {}),
        ("bounce", "2026-11-20T10:00:03Z", {"bounce_class": "hard"}),
        # a late delivered does not undo the bounce (forward only, as the watcher)
        ("delivered", "2026-11-20T10:05:00Z", {}),
    ],
    "c@docomo.ne.jp": [("bounce", "2026-11-20T10:00:04Z", {"bounce_class": "block"})],
    "d@docomo.ne.jp": [],  # no event at all: never reported
    # reported only BEFORE the send (an earlier mail): never reported for this send
    "e@docomo.ne.jp": [("delivered", "2026-11-20T09:59:59Z", {})],
    "f@au.com": [("processed", "2026-11-20T10:00:01Z", {})],  # accepted only
    "g@ezweb.ne.jp": [("deferred", "2026-11-20T10:00:05Z", {})],  # still deferred (au)
    "h@gmail.com": [("dropped", "2026-11-20T10:00:01Z", {"reason": "Bounced Address"})],
    # events of another category after the send: not this send's
    "i@gmail.com": [("delivered", "2026-11-20T10:00:06Z", {"categories": ["news"]})],
    # reported after the report window (4 days): never reported
    "j@gmail.com": [("delivered", "2026-11-25T10:00:00Z", {})],
    "k@yahoo.co.jp": [
        ("bounce", "2026-11-20T10:00:07Z", {"bounce_class": "soft"}),
        ("bounce", "2026-11-20T12:00:00Z", {"bounce_class": "soft"}),
    ],
}


def _events() -> list[dict]:
    rows = []
    for addr, evs in SPRING.items():
        for n, (etype, ts, extra) in enumerate(evs):
            rows.append(
                dict(
                    {
                        "event_type": etype,
                        "event_ts": ts,
                        "message_id": f"m-{addr[0]}",
                        "email_hash": HASHER.hash(addr),
                        "recipient_domain": addr.split("@")[1],
                        "categories": ["sale"],
                        "event_id": f"e-{addr[0]}-{n}",
                    },
                    **extra,
                )
            )
    # receipts-7 names message ids: only the logged message's events count
    for mid, addr, etype in (
        ("r-1", "x@gmail.com", "delivered"),
        ("r-other", "y@gmail.com", "delivered"),  # another message to y
        ("r-2", "y@gmail.com", "unknown"),  # unranked: not a report (as the watcher)
    ):
        rows.append(
            {
                "provider": "ses",
                "event_type": etype,
                "event_ts": "2026-11-22T06:00:01Z",
                "message_id": mid,
                "email_hash": HASHER.hash(addr),
                "recipient_domain": "gmail.com",
                "categories": [],
            }
        )
    return [event_from_json(r) for r in rows]


def _record(wh):
    record_sends(
        list(SPRING), send_id="spring-1", category="sale", sent_at=SENT, warehouse=wh, hasher=HASHER
    )
    record_sends(
        [
            {"email": "x@gmail.com", "message_id": "r-1"},
            {"email": "y@gmail.com", "message_id": "r-2"},
        ],
        send_id="receipts-7",
        provider="ses",
        sent_at="2026-11-22T06:00:00Z",
        warehouse=wh,
        hasher=HASHER,
    )
    # a send the provider reported nothing for: every recipient never reported
    record_sends(
        ["p@gmail.com", "q@docomo.ne.jp", "r@example.org"],
        send_id="lost-batch",
        category="sale",
        sent_at="2026-11-21T00:00:00Z",
        warehouse=wh,
        hasher=HASHER,
    )


@pytest.fixture(params=sorted(BACKENDS))
def loaded(request, tmp_path):
    wh = BACKENDS[request.param](tmp_path / "wh", request)
    load_events(wh, _events(), tmp_path)
    _record(wh)
    return wh


#: per send: (sent, reported, never_reported, delivered, bounces, hard, soft, undetermined,
#: blocks, drops, deferred, accepted_only, opened, clicked) -- SEND_COUNT_COLUMNS' order
WANT = {
    "spring-1": (11, 7, 4, 1, 2, 1, 1, 0, 1, 1, 1, 1, 1, 1),
    "lost-batch": (3, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "receipts-7": (2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
}


def _counts(row) -> tuple:
    return tuple(int(row[c]) for c in SEND_COUNT_COLUMNS)


def test_per_send_counts(loaded):
    df = read_send_outcomes(loaded)  # the whole log
    s = summarize_sends(df, now=datetime(2026, 12, 1, tzinfo=UTC))
    rows = s.to_dict(orient="records")
    assert [r["send_id"] for r in rows] == ["spring-1", "lost-batch", "receipts-7"]
    assert {r["send_id"]: _counts(r) for r in rows} == WANT
    for r in rows:  # each recipient once, at its final status
        parts = ("delivered", "bounces", "blocks", "drops", "deferred", "accepted_only")
        assert sum(r[k] for k in parts) + r["never_reported"] == r["sent"]
        assert r["reported"] + r["never_reported"] == r["sent"]
        assert r["window_closed"]
    spring = rows[0]
    assert (spring["categories"], spring["providers"]) == ("sale", "")
    assert rows[2]["providers"] == "ses" and rows[2]["categories"] == ""
    assert spring["never_reported_rate"] == pytest.approx(4 / 11)
    assert spring["bounce_rate"] == pytest.approx(2 / 11)  # blocks excluded
    assert spring["block_rate"] == pytest.approx(1 / 11)
    assert spring["open_rate"] == 1.0  # opened / delivered
    assert rows[1]["open_rate"] != rows[1]["open_rate"]  # NaN: nothing delivered
    assert rows[1]["delivered_rate"] == 0.0
    assert spring["first_sent_at"].to_pydatetime() == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert spring["report_until"].to_pydatetime() == datetime(2026, 11, 24, 10, tzinfo=UTC)


def test_one_send_by_mailbox_and_its_recipients(loaded):
    df = read_send_outcomes(loaded, send_id="spring-1")
    mb = summarize_sends(df, "mailbox").to_dict(orient="records")
    # most sent first; other last
    assert [(r["mailbox_provider"], _counts(r)[:4]) for r in mb] == [
        ("Gmail", (5, 3, 2, 1)),  # a delivered, b bounced, h dropped; i, j never
        ("docomo", (3, 1, 2, 0)),  # c blocked; d no event, e only before the send
        ("au", (2, 2, 0, 0)),  # f accepted only, g deferred
        ("Yahoo! JAPAN", (1, 1, 0, 0)),
    ]
    assert {r["mailbox_provider"]: r["blocks"] for r in mb}["docomo"] == 1
    got = read_send_recipients(loaded, "spring-1")
    status = {h: (s, b) for h, s, b in zip(got["email_hash"], got["status"], got["bounce_class"])}
    named = {a: status[HASHER.hash(a)] for a in SPRING}
    assert named == {
        "a@gmail.com": ("delivered", None),
        "b@gmail.com": ("bounce", "hard"),
        "c@docomo.ne.jp": ("bounce", "block"),
        "d@docomo.ne.jp": (None, None),
        "e@docomo.ne.jp": (None, None),
        "f@au.com": ("processed", None),
        "g@ezweb.ne.jp": ("deferred", None),
        "h@gmail.com": ("dropped", None),
        "i@gmail.com": (None, None),
        "j@gmail.com": (None, None),
        "k@yahoo.co.jp": ("bounce", "soft"),
    }
    assert got["status"].isna().tolist()[:4] == [True] * 4  # never reported first
    assert {
        h: (int(o), int(c)) for h, o, c in zip(got["email_hash"], got["opened"], got["clicked"])
    }[HASHER.hash("a@gmail.com")] == (1, 1)
    # category filter and date range: the same send, or nothing outside its dates
    assert (
        _counts(summarize_sends(read_send_outcomes(loaded, category="sale")).iloc[0])
        == (WANT["spring-1"])
    )
    assert read_send_outcomes(loaded, date(2026, 11, 22), date(2026, 11, 22))[
        "send_id"
    ].unique().tolist() == ["receipts-7"]


def test_an_open_report_window_is_not_yet_never(loaded):
    df = read_send_outcomes(loaded, send_id="lost-batch")
    early = summarize_sends(df, now=datetime(2026, 11, 22, tzinfo=UTC)).iloc[0]
    late = summarize_sends(df, now=datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC)).iloc[0]
    assert (bool(early["window_closed"]), bool(late["window_closed"])) == (False, True)


def test_the_query_reuses_the_watchers_status_rules():
    from pipelines.sends import SEND_RECIPIENTS_SQL
    from pipelines.status import rank_case_sql, status_case_sql

    assert rank_case_sql("event_type") in SEND_RECIPIENTS_SQL
    assert status_case_sql("event_type") in SEND_RECIPIENTS_SQL


# -- the command, both backends (subprocesses, read-only) ------------------------------------
def _target(wh, bq_env):
    if wh.dialect == "bigquery":
        return f"bigquery://{wh.project}/{wh.dataset}", bq_env
    return wh.uri, {}


@pytest.fixture
def target(loaded, request):
    env = {}
    if loaded.dialect == "bigquery":
        env = {"MAILPULSE_BIGQUERY_API_ENDPOINT": request.getfixturevalue("bq_emulator").url}
    return _target(loaded, env)


def _tables(wh) -> set[str]:
    return {
        t for t in ("delivery_outcomes", "domain_outcomes", "sends", "events") if wh.table_exists(t)
    }


def test_cli_send_view_json_and_table_read_only(loaded, target, cli, request, tmp_path):
    uri, env = target
    before = _tables(loaded)
    mark = None
    if loaded.dialect == "bigquery":
        proxy = request.getfixturevalue("bq_emulator").proxy
        mark = proxy.mark()
    else:
        import os

        stat = os.stat(loaded.path)
        # a read-only reader held open: a command that tried to write could not open the file
        import duckdb

        holder = duckdb.connect(loaded.path, read_only=True)

    res = cli("outcomes", "--warehouse", uri, "--by", "send", "--format", "json", env=env)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    # default range: the 4 days ending at the latest send (2026-11-19 .. 2026-11-22)
    assert {r["send_id"]: tuple(r[c] for c in SEND_COUNT_COLUMNS) for r in rows} == WANT
    assert rows[0]["report_until"] == "2026-11-24T10:00:00+00:00"
    assert rows[0]["window_closed"] is True

    res = cli(
        "outcomes", "--warehouse", uri, "--send-id", "spring-1", "--by", "mailbox",
        "--format", "json", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    mb = json.loads(res.stdout)
    assert [(r["mailbox_provider"], r["sent"], r["never_reported"]) for r in mb] == [
        ("Gmail", 5, 2),
        ("docomo", 3, 2),
        ("au", 2, 0),
        ("Yahoo! JAPAN", 1, 0),
    ]

    res = cli("outcomes", "--warehouse", uri, "--send-id", "lost-batch", env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Sends 2026-11-21 .. 2026-11-21")
    row = next(line for line in lines if line.startswith("lost-batch"))
    assert row.split()[:6] == ["lost-batch", "sale", "3", "0", "3", "(100.0%)"]
    assert "--send-id lost-batch --recipients" in res.stdout

    # who did not get it, by address from the owner's own list
    listing = tmp_path / "list.csv"
    listing.write_text("email,name\n" + "".join(f"{a},x\n" for a in list(SPRING)[:6]))
    res = cli(
        "outcomes", "--warehouse", uri, "--send-id", "spring-1", "--recipients",
        "--emails", listing, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == "Send spring-1: 10 recipients did not get it (delivered ones omitted)"
    by_first = {line.split()[0]: line for line in out[3:13]}
    assert "never reported" in by_first["d@docomo.ne.jp"]
    assert "never reported" in by_first["e@docomo.ne.jp"]
    assert "bounced (block)" in by_first["c@docomo.ne.jp"]
    assert "accepted only" in by_first["f@au.com"]
    assert "a@gmail.com" not in res.stdout  # delivered
    assert sum(line.startswith("(not in --emails)") for line in out) == 5

    res = cli(
        "outcomes", "--warehouse", uri, "--send-id", "spring-1", "--recipients",
        "--format", "json", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    people = json.loads(res.stdout)
    assert sum(p["never_reported"] for p in people) == 4 and len(people) == 10
    assert not any("@" in str(v) for p in people for v in p.values())  # hashes only
    assert all(p["status_event_ts"] is None for p in people if p["never_reported"])

    # read only: nothing created, nothing written
    assert _tables(loaded) == before and "delivery_outcomes" not in before
    if loaded.dialect == "bigquery":
        jobs = [
            r.body["configuration"]
            for r in proxy.since(mark)
            if r.method == "POST" and r.body and "configuration" in r.body
        ]
        assert jobs and all("query" in j for j in jobs)
        for j in jobs:
            q = j["query"]["query"].upper()
            assert not any(w in q for w in ("INSERT", "MERGE", "CREATE", "DELETE", "UPDATE"))
            assert "destinationTable" not in j["query"]
        assert not [
            r for r in proxy.since(mark) if r.method in ("POST", "PUT", "PATCH", "DELETE")
            and "/tables" in r.path
        ]  # fmt: skip
    else:
        holder.close()
        import os

        now = os.stat(loaded.path)
        assert (now.st_mtime_ns, now.st_size) == (stat.st_mtime_ns, stat.st_size)


def test_cli_send_view_errors_name_the_fix(loaded, target, cli):
    uri, env = target
    cases = [
        (["--send-id", "nope"], "--by send` lists the sends"),
        (["--recipients"], "add --send-id"),
        (["--send-id", "spring-1", "--by", "day"], "--by mailbox"),
        (["--by", "send", "--recompute"], "drop --recompute"),
        (["--send-id", "spring-1", "--emails", "x.csv"], "add --recipients"),
    ]
    for extra, fix in cases:
        res = cli("outcomes", "--warehouse", uri, *extra, env=env)
        assert res.returncode == 2 and fix in res.stderr, (extra, res.stderr)


def test_cli_without_a_send_log(tmp_path, cli):
    from pipelines.warehouse.duckdb import DuckDBWarehouse

    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(wh, _events()[:2], tmp_path)
    res = cli("outcomes", "--warehouse", wh.uri, "--by", "send")
    assert res.returncode == 2 and "mailpulse sends import FILE" in res.stderr
