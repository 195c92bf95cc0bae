"""End to end: a campaign script sends to a list, events reach the warehouse (a real
DuckDB file) over time while the loader commits batches, and ``wait_for_events`` returns
the right counts and posts the right Slack message (real slack_sdk, local server).
Also: another process holding DuckDB's write lock while the watcher polls."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest
from watch_support import SENT_AT, EventFactory, FakeClock, load_events

from pipelines.events import events_to_arrow
from pipelines.warehouse.duckdb import DEFAULT_LOCK_RETRY, DuckDBWarehouse
from pipelines.watcher import (
    DEFAULT_POLL_POLICY,
    DEFAULT_RETRY_POLICY,
    WatchTimeout,
    wait_for_events,
    watch,
)

CAT = "black-friday-2026"


def campaign(n=40):
    """The list a script sends to, and what will happen to each recipient."""
    emails = [f"Customer{i:03d}@shop{i % 4}.example" for i in range(n)]
    fate = {}
    for i, e in enumerate(emails):
        fate[e] = (
            "delivered"
            if i % 10 < 5
            else "deferred-then-delivered"
            if i % 10 == 5
            else "bounce-hard"
            if i % 10 == 6
            else "bounce-block"
            if i % 10 == 7
            else "dropped"
            if i % 10 == 8
            else "delivered-then-bounce"
        )
    return emails, fate


def arrivals(ev, emails, fate):
    """(fake seconds after the watch starts, events loaded then). Some events arrive
    twice (webhook retries), out of order, and mixed with other campaigns' events."""
    first, second, third = [], [], []
    for e in emails:
        f = fate[e]
        first.append(ev(e, "processed", 1))
        if f == "delivered":
            first.append(ev(e, "delivered", 3))
            third.append(ev(e, "open", 400))
        elif f == "deferred-then-delivered":
            first.append(ev(e, "deferred", 4, reason="421 4.7.0 try again later"))
            second.append(ev(e, "deferred", 200, reason="421 4.7.0 try again later"))
            third.append(ev(e, "delivered", 500))
        elif f == "bounce-hard":
            second.append(
                ev(
                    e,
                    "bounce",
                    30,
                    bounce_class="hard",
                    smtp_status="5.1.1",
                    reason=f"550 5.1.1 <{e.lower()}>: Recipient address rejected",
                )
            )
        elif f == "bounce-block":
            second.append(
                ev(
                    e,
                    "bounce",
                    30,
                    bounce_class="block",
                    smtp_status="5.7.1",
                    reason="554 5.7.1 Service unavailable; client host blocked",
                )
            )
        elif f == "dropped":
            first.append(ev(e, "dropped", 2, reason="Bounced Address"))
        elif f == "delivered-then-bounce":
            first.append(ev(e, "delivered", 3))
            second.append(
                ev(
                    e,
                    "bounce",
                    90,
                    bounce_class="soft",
                    smtp_status="5.2.2",
                    reason="552 5.2.2 mailbox full",
                )
            )
    noise = [
        ev(e, "bounce", 10, categories=["another-campaign"], bounce_class="hard", reason="x")
        for e in emails[:5]
    ]
    retried = [dict(x) for x in second[:3]]  # SendGrid re-sends the same events
    return [(0, first + noise), (25, second), (70, second[:3] + retried), (130, third)]


@pytest.mark.parametrize("timeout,settled", [(1800, True), (100, False)])
def test_a_send_settles_and_is_summarised_on_slack(tmp_path, hasher, slack_env, timeout, settled):
    wh = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    wh.ensure_schema()
    emails, fate = campaign()
    ev = EventFactory(hasher, CAT)
    clock = FakeClock()
    batches = arrivals(ev, emails, fate)
    load_events(wh, batches[0][1], tmp_path)  # the loader's first batch is already in
    for at, events in batches[1:]:
        clock.at(at, lambda events=events: load_events(wh, events, tmp_path))

    counts = wait_for_events(
        emails,
        CAT,
        SENT_AT,
        warehouse=wh.uri,
        timeout=timeout,
        hasher=hasher,
        clock=clock,
        sleep=clock.sleep,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=10, multiplier=2, maximum=60),
    )
    n = len(emails)
    if settled:  # polls at 0, 10, 30, 70, 130: settled once the third batch is in
        assert clock.sleeps == [10, 20, 40, 60]
        assert counts == {
            "delivered": n // 10 * 6,
            "bounce": n // 10 * 3,
            "dropped": n // 10,
            "deferred": 0,
            "unsettled": 0,
        }
    else:  # at 100 s the deferred recipients are still deferred
        assert clock.sleeps == [10, 20, 40, 30]
        assert counts == {
            "delivered": n // 10 * 5,
            "bounce": n // 10 * 3,
            "dropped": n // 10,
            "deferred": n // 10,
            "unsettled": n // 10,
        }
    assert sum(counts[k] for k in ("delivered", "bounce", "dropped", "unsettled")) == n

    (msg,) = slack_env.messages
    text = str(msg["blocks"])
    assert f"Send watch: {CAT}" in text
    assert ("settled after" in text) == settled and ("timed out" in text) != settled
    fields = {f["text"].split("\n")[0]: f["text"] for f in msg["blocks"][2]["fields"]}
    assert fields["*Recipients*"] == f"*Recipients*\n{n}"
    assert fields["*Bounced*"].startswith(
        f"*Bounced*\n{counts['bounce']} (30.0%)\nhard 4 / soft 4 / block 4"
    )
    assert fields["*Dropped*"] == f"*Dropped*\n{counts['dropped']} (10.0%)"
    assert fields["*Delivered*"].startswith(f"*Delivered*\n{counts['delivered']} ")
    assert "550 5.1.1 <address>: Recipient address rejected" in text

    (f,) = slack_env.completed_files()
    assert f["thread_ts"] == msg["ts"]
    rows = list(csv.DictReader(io.StringIO(f["content"].decode())))
    failed = {e for e in emails if fate[e].startswith(("bounce", "dropped", "delivered-then"))}
    assert {r["email"] for r in rows} == failed and len(rows) == len(failed)


def test_raise_on_timeout_after_posting(tmp_path, hasher, slack_env):
    wh = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    ev = EventFactory(hasher, CAT)
    load_events(wh, [ev("a@x.example", "delivered", 5), ev("b@x.example", "deferred", 5)], tmp_path)
    clock = FakeClock()
    with pytest.raises(WatchTimeout) as info:
        wait_for_events(
            ["a@x.example", "b@x.example"],
            CAT,
            SENT_AT,
            warehouse=wh,
            timeout=30,
            raise_on_timeout=True,
            hasher=hasher,
            clock=clock,
            sleep=clock.sleep,
        )
    assert info.value.counts == {
        "delivered": 1,
        "bounce": 0,
        "dropped": 0,
        "deferred": 1,
        "unsettled": 1,
    }
    assert len(slack_env.messages) == 1 and "timed out" in str(slack_env.messages[0]["blocks"])


# -- the real loader: webhook bodies land in the archive, the Beam load job loads them ----
def _sg(email, event, after, i, **extra):
    """A SendGrid Event Webhook event as SendGrid posts it."""
    e = {
        "email": email,
        "timestamp": int(SENT_AT.timestamp()) + after,
        "event": event,
        "sg_event_id": f"sg-{event}-{i}-{after}",
        "sg_message_id": f"msg{i}.filter0001.16.1",
        "smtp-id": f"<msg{i}@shop.example>",
        "category": [CAT, "promo"],
    }
    e.update(extra)
    return e


def test_events_arriving_in_the_archive_while_the_load_job_runs(tmp_path, hasher, slack_env):
    from pipelines.load import NormalizeSettings, run_load

    emails = [f"Buyer{i}@shop.example" for i in range(6)]
    archive = tmp_path / "archive"
    hour = archive / "sendgrid" / f"{SENT_AT:%Y/%m/%d/%H}"
    hour.mkdir(parents=True)
    wh_uri = f"duckdb://{tmp_path}/warehouse.duckdb"
    posts = {  # fake seconds -> one webhook POST body (a JSON array) written to the archive
        0: [_sg(e, "processed", 1, i) for i, e in enumerate(emails)]
        + [
            _sg(emails[0], "delivered", 3, 0),
            _sg(emails[1], "delivered", 3, 1),
            _sg(emails[2], "deferred", 4, 2, response="421 try again later", attempt="1"),
            _sg(emails[3], "dropped", 2, 3, reason="Bounced Address"),
        ],
        25: [
            _sg(
                emails[4],
                "bounce",
                30,
                4,
                type="bounce",
                status="5.1.1",
                reason="550 5.1.1 The email account does not exist",
            ),
            _sg(
                emails[5],
                "bounce",
                31,
                5,
                type="blocked",
                status="5.7.1",
                reason="554 5.7.1 blocked",
            ),
            _sg(emails[0], "delivered", 3, 0),
        ],  # a webhook retry: same event again
        70: [_sg(emails[2], "delivered", 65, 2), _sg(emails[1], "open", 66, 1)],
    }

    def land_and_load(t):
        (hour / f"post-{t:03d}.json").write_text(json.dumps(posts[t]))
        report = run_load(
            str(archive), SENT_AT.date(), wh_uri, config=NormalizeSettings(hasher=hasher)
        )
        assert report.adds_up()
        loads.append(report.totals)

    loads = []
    land_and_load(0)
    clock = FakeClock()
    for t in (25, 70):
        clock.at(t, lambda t=t: land_and_load(t))
    counts = wait_for_events(
        emails,
        CAT,
        SENT_AT,
        warehouse=wh_uri,
        hasher=hasher,
        clock=clock,
        sleep=clock.sleep,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=10, multiplier=2, maximum=60),
    )
    assert counts == {"delivered": 3, "bounce": 2, "dropped": 1, "deferred": 0, "unsettled": 0}
    assert clock.sleeps == [10, 20, 40]  # settled at the poll after the third load
    # each load rereads the whole day; only new events are stored (the retry is not)
    assert [x["events_loaded"] for x in loads] == [10, 2, 2]
    (msg,) = slack_env.messages
    fields = {f["text"].split("\n")[0]: f["text"] for f in msg["blocks"][2]["fields"]}
    assert fields["*Bounced*"] == "*Bounced*\n2 (33.3%)\nhard 1 / soft 0 / block 1"
    (f,) = slack_env.completed_files()
    rows = list(csv.DictReader(io.StringIO(f["content"].decode())))
    assert sorted(r["email"] for r in rows) == sorted(emails[3:])


# -- another process holds DuckDB's write lock while the watcher polls -------------------
HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    path, parquet, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    con = duckdb.connect(path)              # the single writer: others cannot open the file
    print("locked", flush=True)
    time.sleep(hold)
    con.execute("INSERT INTO events BY NAME SELECT * FROM read_parquet(?)", [parquet])
    con.close()
""")


def _hold_lock(tmp_path, wh, events, hold):
    parquet = str(tmp_path / "late.parquet")
    pq.write_table(events_to_arrow(events), parquet)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, wh.path, parquet, str(hold)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


class RealSleeps(list):
    """Real, short sleeps (another real process holds the lock), recorded."""

    def __call__(self, s):
        self.append(s)
        time.sleep(s)


def test_readers_retry_while_another_process_holds_the_write_lock(tmp_path, hasher):
    ev = EventFactory(hasher, CAT)
    emails = [f"r{i}@x.example" for i in range(5)]
    seed = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    load_events(seed, [ev(e, "deferred", 5) for e in emails], tmp_path)
    lock_sleeps = RealSleeps()
    wh = DuckDBWarehouse(
        seed.path,
        sleep=lock_sleeps,
        lock_retry=DEFAULT_LOCK_RETRY.replace(attempts=200, initial=0.02, maximum=0.05),
    )
    proc = _hold_lock(tmp_path, wh, [ev(e, "delivered", 60) for e in emails], hold=1.0)
    try:
        clock = FakeClock()
        started = time.monotonic()
        r = watch(
            emails,
            CAT,
            SENT_AT,
            warehouse=wh,
            hasher=hasher,
            notify=False,
            clock=clock,
            sleep=clock.sleep,
        )
        waited = time.monotonic() - started
    finally:
        assert proc.wait(timeout=30) == 0
    assert lock_sleeps and waited >= 0.3  # the reader met the lock and retried
    assert r.settled and r.polls == 1 and r.transient_errors == 0
    assert r.counts["delivered"] == 5  # it read after the writer committed


def test_a_lock_beyond_the_backend_retries_is_a_transient_error_the_watcher_retries(
    tmp_path, hasher
):
    ev = EventFactory(hasher, CAT)
    emails = [f"r{i}@x.example" for i in range(3)]
    seed = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    load_events(seed, [ev(e, "processed", 1) for e in emails], tmp_path)
    wh = DuckDBWarehouse(seed.path, lock_retry=DEFAULT_LOCK_RETRY.replace(attempts=2, initial=0.01))
    proc = _hold_lock(tmp_path, wh, [ev(e, "delivered", 60) for e in emails], hold=1.0)
    retry_sleeps = RealSleeps()
    try:
        clock = FakeClock()
        # retry waits (0.1 s) are real, since a real process holds the lock; poll waits
        # (5 s and more by the default policy) go to the fake clock
        r = watch(
            emails,
            CAT,
            SENT_AT,
            warehouse=wh,
            hasher=hasher,
            notify=False,
            clock=clock,
            sleep=lambda s: retry_sleeps(s) if s < 1 else clock.sleep(s),
            retry_policy=DEFAULT_RETRY_POLICY.replace(attempts=50, initial=0.1, multiplier=1),
        )
    finally:
        assert proc.wait(timeout=30) == 0
    assert r.transient_errors >= 1 and len(retry_sleeps) == r.transient_errors
    assert r.settled and r.counts["delivered"] == 3 and clock.sleeps == []
