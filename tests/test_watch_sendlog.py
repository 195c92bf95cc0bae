"""The watch and the send log: a watch records its list (hashed) in ``sends``, ``mailpulse
watch --send-id`` resumes it from another process, and recipients the provider never
reported are told apart at the timeout. Real DuckDB files and real `mailpulse`
subprocesses; faults only where a real component cannot produce them (root ignores
file permissions)."""

from __future__ import annotations

import contextlib
import json
import logging

import duckdb
import pytest
from watch_support import SENT_AT, EventFactory, FakeClock, RecordingWarehouse, load_events

from pipelines import report
from pipelines.warehouse import TransientWarehouseError, WarehouseError
from pipelines.warehouse.duckdb import DuckDBWarehouse
from pipelines.watcher import (
    DEFAULT_POLL_POLICY,
    DEFAULT_RETRY_POLICY,
    WatchFailed,
    default_send_id,
    resume,
    watch,
)

CAT = "spring-sale"
EMAILS = ["Ann@Example.com", "bob@example.org", "cho@example.net", "dee@docomo.ne.jp"]
SINCE = "2026-11-23T10:00:00Z"
NO_SLACK = {"SLACK_BOT_TOKEN": "", "MAILPULSE_SLACK_CHANNEL": "", "MAILPULSE_SLACK_API_URL": ""}


@pytest.fixture
def ev(hasher):
    return EventFactory(hasher, CAT)


@pytest.fixture
def wh(tmp_path, ev):
    """A warehouse where ann is delivered, bob bounced, cho deferred, dee never reported."""
    w = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    # (message ids without the address: the file is searched for plain addresses below)
    load_events(
        w,
        [
            ev(EMAILS[0], "delivered", 5, message="m0"),
            ev(
                EMAILS[1],
                "bounce",
                5,
                message="m1",
                bounce_class="hard",
                reason="550 5.1.1 unknown",
            ),
            ev(EMAILS[2], "deferred", 5, message="m2"),
        ],
        tmp_path,
    )
    return w


def run(wh, hasher, clock=None, emails=EMAILS, **kw):
    clock = clock or FakeClock()
    kw.setdefault("notify", False)
    kw.setdefault("timeout", 0)
    return watch(
        emails, CAT, SENT_AT, warehouse=wh, hasher=hasher, clock=clock, sleep=clock.sleep, **kw
    )


def log_rows(wh):
    with wh.connect(read_only=True) as con:
        return con.execute(
            "SELECT send_id, email_hash, category, sent_at, message_id "
            "FROM sends ORDER BY email_hash"
        ).fetchall()


def test_watch_records_its_list_hashed_and_a_rerun_adds_nothing(wh, hasher):
    r = run(wh, hasher, send_id="spring-1")
    assert r.send_id == "spring-1" and r.send_recorded
    rows = log_rows(wh)
    assert sorted(h for _, h, *_ in rows) == sorted(hasher.hash(e) for e in EMAILS)
    assert {(s, c, t) for s, _, c, t, _ in rows} == {("spring-1", CAT, SENT_AT)}
    again = run(wh, hasher, send_id="spring-1")
    assert again.send_recorded and log_rows(wh) == rows  # idempotent across a rerun
    assert again.counts == r.counts


def test_the_default_send_id_is_category_and_time_and_is_printed(wh, hasher):
    r = run(wh, hasher)
    assert r.send_id == default_send_id(CAT, SENT_AT) == f"{CAT}@2026-11-23T10:00:00Z"
    assert {s for s, *_ in log_rows(wh)} == {r.send_id}
    assert f"send id     {r.send_id}" in r.summary()
    assert f"mailpulse watch --send-id {r.send_id}" in r.summary()
    assert r.as_dict()["send_id"] == r.send_id and r.as_dict()["send_recorded"] is True


def test_never_reported_at_the_timeout_in_result_json_summary_and_slack(wh, hasher):
    r = run(wh, hasher, send_id="spring-1")
    assert r.timed_out
    assert r.never_reported == [EMAILS[3]] and r.not_yet_reported == []
    assert r.deferred == [EMAILS[2]]  # reported (deferred): not "never reported"
    d = r.as_dict()
    assert d["never_reported"] == 1 and d["not_yet_reported"] == 0
    assert "never reported 1 (25.0%)" in r.summary()
    assert "sent, never reported by the provider" in r.summary()
    fields = {f["text"].split("\n")[0]: f["text"] for f in report.watch_blocks(r)[2]["fields"]}
    assert fields["*Never reported*"] == (
        "*Never reported*\n1 (25.0%)\nsent, never reported by the provider"
    )
    assert "1 sent but never reported by the provider" in report.summary_text(r)
    assert "send `spring-1`" in json.dumps(report.watch_blocks(r))


def test_while_waiting_silent_recipients_are_not_yet_reported(wh, hasher, ev, tmp_path):
    # The warehouse fails after the first poll: the last result known is mid-watch.
    flaky = RecordingWarehouse(wh, fail_on=set(range(3, 50)))
    clock = FakeClock()
    with pytest.raises(WatchFailed) as info:
        run(
            flaky,
            hasher,
            clock,
            timeout=600,
            retry_policy=DEFAULT_RETRY_POLICY.replace(attempts=2),
            poll_policy=DEFAULT_POLL_POLICY.replace(initial=1),
        )
    last = info.value.result
    assert last is not None and not last.timed_out and not last.settled
    assert last.never_reported == [] and last.not_yet_reported == [EMAILS[3]]
    assert "never reported" not in last.summary()
    assert "*Never reported*" not in json.dumps(report.watch_blocks(last))


def test_settled_watch_has_nobody_never_reported(wh, hasher, ev, tmp_path):
    load_events(wh, [ev(EMAILS[2], "delivered", 60), ev(EMAILS[3], "delivered", 60)], tmp_path)
    r = run(wh, hasher)
    assert r.settled and r.never_reported == [] and r.as_dict()["never_reported"] == 0


def test_recorded_once_the_warehouse_exists(tmp_path, hasher, ev, caplog):
    path = tmp_path / "later.duckdb"
    wh = DuckDBWarehouse(str(path))
    clock = FakeClock()
    clock.at(30, lambda: load_events(wh, [ev(e, "delivered", 5) for e in EMAILS], tmp_path))
    caplog.set_level(logging.INFO, logger="pipelines.watcher")
    r = run(wh, hasher, clock, timeout=600, poll_policy=DEFAULT_POLL_POLICY.replace(initial=10))
    assert r.settled and r.send_recorded and r.polls >= 4
    assert len(log_rows(wh)) == len(EMAILS)


def test_a_watch_that_ends_before_the_warehouse_exists_says_it_was_not_recorded(
    tmp_path, hasher, caplog
):
    wh = DuckDBWarehouse(str(tmp_path / "never.duckdb"))
    r = run(wh, hasher, timeout=0)
    assert r.timed_out and not r.warehouse_ready and not r.send_recorded
    assert not (tmp_path / "never.duckdb").exists()  # the watch creates no warehouse
    assert "not recorded in the send log" in caplog.text
    assert "(not in the send log)" in r.summary()


class _WriteFaults(DuckDBWarehouse):
    """A real DuckDB file whose write connections fail as given (root ignores file
    permissions, and a held lock would block the watch's reads too)."""

    def __init__(self, path, errors):
        super().__init__(path)
        self.errors = list(errors)
        self.writes = 0

    @contextlib.contextmanager
    def connect(self, read_only=False):
        if not read_only:
            self.writes += 1
            if self.errors:
                raise self.errors.pop(0)
        with super().connect(read_only=read_only) as con:
            yield con


def test_a_warehouse_that_is_not_writable_does_not_break_the_watch(wh, hasher, caplog):
    ro = _WriteFaults(wh.path, [WarehouseError("cannot open: read-only file system")] * 5)
    r = run(
        ro,
        hasher,
        timeout=600,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=1),
        clock=FakeClock(),
    )
    assert r.timed_out and r.counts["delivered"] == 1 and not r.send_recorded
    assert ro.writes == 1  # tried once, logged, gone on
    assert "cannot record send" in caplog.text and "mailpulse sends import" in caplog.text
    assert not DuckDBWarehouse(wh.path).table_exists("sends")


def test_a_busy_file_is_recorded_at_the_next_poll(wh, hasher):
    busy = _WriteFaults(wh.path, [TransientWarehouseError("held by PID 1234")])
    r = run(
        busy,
        hasher,
        timeout=30,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=10),
        clock=FakeClock(),
    )
    assert r.send_recorded and busy.writes == 2 and len(log_rows(wh)) == len(EMAILS)


def test_recorded_in_one_process_resumed_in_another(cli, wh, hasher, tmp_path):
    emails = tmp_path / "emails.txt"
    emails.write_text("\n".join(EMAILS) + "\n")
    first = cli(
        "watch",
        "--category",
        CAT,
        "--since",
        SINCE,
        "--emails",
        emails,
        "--send-id",
        "spring-1",
        "--warehouse",
        wh.uri,
        "--timeout",
        "0",
        "--json",
        env=NO_SLACK,
    )
    assert first.returncode == 3, first.stderr
    a = json.loads(first.stdout)
    assert a["send_id"] == "spring-1" and a["send_recorded"] and a["never_reported"] == 1

    later = cli(
        "watch",
        "--send-id",
        "spring-1",
        "--warehouse",
        wh.uri,
        "--timeout",
        "0",
        "--json",
        env=NO_SLACK,
    )
    assert later.returncode == 3, later.stderr
    b = json.loads(later.stdout)
    for k in (
        "counts",
        "recipients",
        "category",
        "since",
        "bounce_classes",
        "never_reported",
        "send_id",
    ):
        assert b[k] == a[k], k
    # results refer to hashes, never to plain addresses
    assert [o["email"] for o in b["bounced"]] == [hasher.hash(EMAILS[1])]
    assert b["never_seen"] == [hasher.hash(EMAILS[3])]
    assert "@" not in later.stdout.replace(f"{CAT}@", "")

    # the same send resumed in Python (another "later")
    r = resume("spring-1", warehouse=wh, notify=False, timeout=0)
    assert r.counts == a["counts"] and len(r.never_reported) == 1
    assert r.by_hash and b["by_hash"] and not a["by_hash"]
    assert "hashes in the thread" in json.dumps(report.watch_blocks(r))
    assert report.failed_recipients_csv(r).splitlines()[1].startswith(hasher.hash(EMAILS[1]))

    # nothing plain is stored: no address in any table or anywhere in the file
    with duckdb.connect(wh.path, read_only=True) as con:
        tables = [t for (t,) in con.execute("SHOW TABLES").fetchall()]
        dump = "\n".join(str(con.execute(f"SELECT * FROM {t}").fetchall()) for t in tables)
    assert "sends" in tables
    raw = open(wh.path, "rb").read()
    for e in EMAILS:
        # (whole addresses: a 3-letter local part such as "dee" is also hex, as hashes are)
        for needle in (e, e.lower(), e.lower().split("@")[0] + "@"):
            assert needle not in dump, needle
            assert needle.encode() not in raw, needle


def test_resume_says_what_to_fix(cli, wh, tmp_path, hasher):
    p = cli("watch", "--send-id", "nope", "--warehouse", wh.uri, env=NO_SLACK)
    assert p.returncode == 2 and "no send log" in p.stderr
    run(wh, hasher, send_id="spring-1")
    p = cli("watch", "--send-id", "nope", "--warehouse", wh.uri, env=NO_SLACK)
    assert p.returncode == 2 and "'nope' is not in the send log" in p.stderr
    p = cli("watch", "--warehouse", wh.uri, env=NO_SLACK)
    assert p.returncode == 2 and "--send-id ID to resume" in p.stderr
    emails = tmp_path / "e.txt"
    emails.write_text("a@example.com\n")
    p = cli("watch", "--emails", emails, "--warehouse", wh.uri, env=NO_SLACK)
    assert p.returncode == 2 and "--emails needs --category and --since" in p.stderr
    p = cli("watch", "--send-id", "spring-1", "--since", SINCE, "--warehouse", wh.uri, env=NO_SLACK)
    assert p.returncode == 2 and "drop --since" in p.stderr


@pytest.mark.parametrize("backend", ["duckdb", "bigquery"])
def test_record_and_resume_on_both_backends(backend, request, tmp_path, hasher, ev):
    from test_queries import BACKENDS

    w = BACKENDS[backend](tmp_path / "wh", request)
    load_events(
        w,
        [
            ev(EMAILS[0], "delivered", 5, message="m0"),
            ev(EMAILS[1], "dropped", 5, message="m1", reason="Invalid"),
        ],
        tmp_path,
    )
    first = run(w, hasher, send_id="both-1")
    again = run(w, hasher, send_id="both-1")  # idempotent
    assert first.send_recorded and again.send_recorded
    later = resume(
        "both-1", warehouse=w, notify=False, timeout=0, clock=FakeClock(), sleep=FakeClock().sleep
    )
    assert later.counts == first.counts and later.recipients == len(EMAILS)
    assert sorted(later.never_reported) == sorted(hasher.hash(e) for e in EMAILS[2:])
    assert later.category == CAT and later.since == SENT_AT


def test_a_file_held_briefly_by_another_process_is_waited_for(wh, hasher):
    """A real second process (as a `load --follow` commit) holds the DuckDB file for a
    moment while the watch starts: the backend's lock retry waits, then it records."""
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"con = duckdb.connect({wh.path!r})\n"
            "print('held', flush=True)\n"
            "time.sleep(1.5)\n"
            "con.close()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        r = run(wh, hasher, send_id="held-1")
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=30)
    assert r.send_recorded and r.counts["delivered"] == 1
    assert waited > 0.5  # it did wait for the other process
    assert len(log_rows(wh)) == len(EMAILS)
