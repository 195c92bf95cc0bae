"""The watcher against a real DuckDB file, with an injected clock (nothing sleeps)."""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta

import pytest
from watch_support import SENT_AT, EventFactory, FakeClock, RecordingWarehouse, load_events

from pipelines import watch_queries
from pipelines import watcher as watcher_mod
from pipelines.slack import ConsoleNotifier
from pipelines.sql import to_duckdb
from pipelines.warehouse import TransientWarehouseError, WarehouseError
from pipelines.warehouse.duckdb import DuckDBWarehouse
from pipelines.watcher import (
    DEFAULT_POLL_POLICY,
    DEFAULT_RETRY_POLICY,
    WatchFailed,
    WatchTimeout,
    already_sent,
    default_timeout,
    wait_for_events,
    watch,
)

CAT = "newsletter-2026-11"
EMAILS = ["ann@example.com", "Bob@Example.org", "cho@example.net", "dee@example.com"]


@pytest.fixture
def wh(tmp_path):
    w = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    w.ensure_schema()
    return w


@pytest.fixture
def ev(hasher):
    return EventFactory(hasher, CAT)


@pytest.fixture
def clock():
    return FakeClock()


def run(wh, clock, hasher, emails=EMAILS, **kw):
    kw.setdefault("notify", False)
    kw.setdefault("timeout", 600)
    return watch(
        emails, CAT, SENT_AT, warehouse=wh, hasher=hasher, clock=clock, sleep=clock.sleep, **kw
    )


def test_settles_at_first_poll_when_everyone_has_an_outcome(wh, ev, clock, hasher, tmp_path):
    load_events(
        wh,
        [
            ev(EMAILS[0], "processed", 1),
            ev(EMAILS[0], "delivered", 5),
            ev(EMAILS[1], "bounce", 9, bounce_class="hard", reason="550 5.1.1 no such user"),
            ev(EMAILS[2], "dropped", 2, reason="Bounced Address"),
            ev(EMAILS[3], "open", 90),
        ],
        tmp_path,
    )
    r = run(wh, clock, hasher)
    assert r.settled and not r.timed_out
    assert r.polls == 1 and clock.sleeps == []
    assert r.counts == {"delivered": 2, "bounce": 1, "dropped": 1, "deferred": 0, "unsettled": 0}
    assert r.statuses == {
        EMAILS[0]: "delivered",
        EMAILS[1]: "bounce",
        EMAILS[2]: "dropped",
        EMAILS[3]: "delivered",
    }  # an open implies delivery
    (b,) = r.bounced
    assert (b.email, b.bounce_class, b.reason) == (EMAILS[1], "hard", "550 5.1.1 no such user")
    assert [d.email for d in r.dropped] == [EMAILS[2]]


def test_deferred_then_delivered_counts_once_as_delivered(wh, ev, clock, hasher, tmp_path):
    load_events(
        wh,
        [ev(e, "delivered", 5) for e in EMAILS[:3]]
        + [ev(EMAILS[3], "deferred", 10, reason="421 try again later")],
        tmp_path,
    )
    seen = []
    # the deferred recipient is delivered 50 s later (the loader writes between polls)
    clock.at(
        50,
        lambda: load_events(
            wh, [ev(EMAILS[3], "deferred", 40), ev(EMAILS[3], "delivered", 45)], tmp_path
        ),
    )
    orig = watcher_mod._build_result

    def spy(*a, **kw):
        res = orig(*a, **kw)
        seen.append(res.counts)
        return res

    watcher_mod._build_result = spy
    try:
        r = run(
            wh,
            clock,
            hasher,
            poll_policy=DEFAULT_POLL_POLICY.replace(initial=20, multiplier=2, maximum=60),
        )
    finally:
        watcher_mod._build_result = orig
    assert seen[0] == {"delivered": 3, "bounce": 0, "dropped": 0, "deferred": 1, "unsettled": 1}
    assert r.settled and r.counts == {
        "delivered": 4,
        "bounce": 0,
        "dropped": 0,
        "deferred": 0,
        "unsettled": 0,
    }
    assert clock.sleeps == [20, 40]  # polls at 0, 20, 60: settled at the third
    assert r.polls == 3 and r.elapsed == 60


def test_bounce_is_final_whatever_the_order(wh, ev, clock, hasher, tmp_path):
    a, b = EMAILS[:2]
    load_events(
        wh,
        [
            ev(a, "delivered", 5),
            ev(
                a, "bounce", 30, bounce_class="soft", reason="mailbox full"
            ),  # delivered, then bounce
            ev(b, "bounce", 5, bounce_class="block", reason="blocked"),
            ev(b, "delivered", 30),
            ev(b, "deferred", 40),
        ],
        tmp_path,
    )  # late events
    r = run(wh, clock, hasher, emails=[a, b])
    assert r.statuses == {a: "bounce", b: "bounce"}
    assert r.bounce_classes == {"hard": 0, "soft": 1, "block": 1, "undetermined": 0}


def test_status_is_across_all_messages_of_the_category(wh, ev, clock, hasher, tmp_path):
    a = EMAILS[0]
    load_events(
        wh,
        [
            ev(a, "delivered", 5, message="m1"),
            ev(a, "bounce", 8, message="m2", bounce_class="hard", reason="gone"),
        ],
        tmp_path,
    )
    assert run(wh, clock, hasher, emails=[a]).statuses == {a: "bounce"}


def test_never_seen_and_processed_only_are_unsettled_and_timeout_returns_what_is_known(
    wh, ev, clock, hasher, tmp_path
):
    load_events(
        wh,
        [
            ev(EMAILS[0], "delivered", 5),
            ev(EMAILS[1], "processed", 1),
            ev(EMAILS[2], "deferred", 3),
        ],
        tmp_path,
    )
    r = run(
        wh,
        clock,
        hasher,
        timeout=100,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=5, multiplier=1.5, maximum=60),
    )
    assert r.timed_out and not r.settled and r.state == "timed out"
    assert r.counts == {"delivered": 1, "bounce": 0, "dropped": 0, "deferred": 1, "unsettled": 3}
    assert r.deferred == [EMAILS[2]] and r.pending == [EMAILS[1]] and r.never_seen == [EMAILS[3]]
    # first poll at once, backing off 5, 7.5, 11.25, 16.875, 25.3 then the last at the deadline
    assert clock.sleeps[:5] == [5, 7.5, 11.25, 16.875, 25.3125]
    assert sum(clock.sleeps) == pytest.approx(100) and r.elapsed == pytest.approx(100)
    assert r.polls == 7
    assert "timed out" in r.summary()


def test_poll_delays_are_capped(wh, clock, hasher):
    r = run(
        wh,
        clock,
        hasher,
        emails=["x@example.com"],
        timeout=400,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=30, multiplier=3, maximum=100),
    )
    assert clock.sleeps == [30, 90, 100, 100, 80]  # the last sleep ends at the deadline
    assert r.timed_out and r.polls == 6


def test_raise_on_timeout_raises_a_timeout_error_after_posting(wh, ev, clock, hasher, tmp_path):
    load_events(wh, [ev(EMAILS[0], "delivered", 5)], tmp_path)
    out = io.StringIO()
    with pytest.raises(TimeoutError) as info:
        run(
            wh,
            clock,
            hasher,
            timeout=30,
            raise_on_timeout=True,
            notify=True,
            notifier=ConsoleNotifier(out),
        )
    exc = info.value
    assert isinstance(exc, WatchTimeout)
    assert exc.counts == {"delivered": 1, "bounce": 0, "dropped": 0, "deferred": 0, "unsettled": 3}
    assert exc.result.timed_out and "3 of 4 recipients not settled" in str(exc)
    assert "timed out" in out.getvalue() and "delivered   1" in out.getvalue()


def test_wait_for_events_returns_the_counts_dict(wh, ev, clock, hasher, tmp_path):
    load_events(wh, [ev(e, "delivered", 5) for e in EMAILS], tmp_path)
    counts = wait_for_events(
        EMAILS,
        CAT,
        SENT_AT,
        warehouse=wh,
        notify=False,
        hasher=hasher,
        clock=clock,
        sleep=clock.sleep,
    )
    assert counts == {"delivered": 4, "bounce": 0, "dropped": 0, "deferred": 0, "unsettled": 0}
    assert list(counts) == ["delivered", "bounce", "dropped", "deferred", "unsettled"]


def test_transient_errors_are_retried_apart_from_polls(wh, ev, clock, hasher, tmp_path):
    load_events(wh, [ev(e, "delivered", 5) for e in EMAILS[:3]], tmp_path)
    clock.at(25, lambda: load_events(wh, [ev(EMAILS[3], "delivered", 20)], tmp_path))
    flaky = RecordingWarehouse(wh, fail_on={2, 3})  # the second poll fails twice
    r = run(
        flaky,
        clock,
        hasher,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=10, multiplier=2, maximum=60),
        retry_policy=DEFAULT_RETRY_POLICY.replace(attempts=4, initial=0.5, multiplier=2),
    )
    # poll 1 at 0; sleep 10 (poll); poll 2 fails, retried after 0.5 and 1 (retry policy);
    # sleep 20 (poll delay goes on from 10, unaffected by the retries); poll 3 settles
    assert clock.sleeps == [10, 0.5, 1, 20]
    assert r.settled and r.polls == 3 and r.transient_errors == 2
    assert flaky.attempts == 5


def test_transient_errors_beyond_the_policy_fail_with_what_was_known(
    wh, ev, clock, hasher, tmp_path
):
    load_events(wh, [ev(EMAILS[0], "delivered", 5)], tmp_path)
    flaky = RecordingWarehouse(wh, fail_on={2, 3, 4})
    with pytest.raises(WatchFailed) as info:
        run(
            flaky,
            clock,
            hasher,
            poll_policy=DEFAULT_POLL_POLICY.replace(initial=10),
            retry_policy=DEFAULT_RETRY_POLICY.replace(attempts=3, initial=1, multiplier=2),
        )
    assert clock.sleeps == [10, 1, 2]
    assert isinstance(info.value.__cause__, TransientWarehouseError)
    assert info.value.result.counts["delivered"] == 1 and info.value.result.polls == 1
    assert "rerun the watch" in str(info.value)


def test_bigquery_server_errors_count_as_transient():
    from google.api_core import exceptions as gexc

    assert watcher_mod.is_transient(gexc.InternalServerError("boom"))
    assert watcher_mod.is_transient(gexc.ServiceUnavailable("boom"))
    assert watcher_mod.is_transient(ConnectionResetError())
    assert not watcher_mod.is_transient(gexc.BadRequest("bad sql"))
    assert not watcher_mod.is_transient(WarehouseError("no table"))
    assert not watcher_mod.is_transient(ValueError("x"))


def test_other_errors_are_not_retried(tmp_path, clock, hasher):
    garbage = tmp_path / "not-a-warehouse.duckdb"
    garbage.write_bytes(b"this is not a DuckDB file" * 100)
    with pytest.raises(WarehouseError, match="cannot open"):
        run(DuckDBWarehouse(str(garbage)), clock, hasher)
    assert clock.sleeps == []


def test_every_query_reads_only_partitions_from_the_send_date_on(wh, ev, clock, hasher, tmp_path):
    # yesterday's send of the same category to the same people bounced; it must not count
    load_events(
        wh,
        [
            ev(EMAILS[0], "bounce", -86400, bounce_class="hard", reason="old"),
            ev(EMAILS[0], "delivered", 5),
            ev(EMAILS[1], "delivered", 5, categories=["other-campaign"]),
        ],
        tmp_path,
    )
    rec = RecordingWarehouse(wh)
    r = run(rec, clock, hasher, emails=EMAILS[:2], timeout=10)
    already_sent(EMAILS, CAT, SENT_AT, warehouse=rec, hasher=hasher)
    assert r.statuses == {EMAILS[0]: "delivered", EMAILS[1]: None}
    assert len(rec.queries) == r.polls + 1
    for sql, params in rec.queries:
        assert re.search(r"event_date\s*>=\s*@since_date", sql)
        assert re.search(r"event_ts\s*>=\s*@since\b", sql)
        assert "@category IN UNNEST(categories)" in sql
        assert "email_hash IN UNNEST(@hashes)" in sql
        assert params["since_date"] == SENT_AT.date() and params["since"] == SENT_AT
        assert "event_date >= $since_date" in to_duckdb(sql)


def test_only_hashes_reach_the_warehouse(wh, ev, clock, hasher, tmp_path):
    load_events(wh, [ev(EMAILS[0], "delivered", 5)], tmp_path)
    rec = RecordingWarehouse(wh)
    run(rec, clock, hasher, timeout=5)
    already_sent(EMAILS, CAT, SENT_AT, warehouse=rec, hasher=hasher)
    assert rec.queries
    for sql, params in rec.queries:
        blob = (sql + repr(params)).lower()
        for address in EMAILS:
            assert address.lower() not in blob
            assert address.split("@")[0].lower() not in blob
        assert sorted(params["hashes"]) == sorted(hasher.hash(a) for a in EMAILS)
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in params["hashes"])


def test_duplicates_and_case_variants_are_one_recipient(wh, ev, clock, hasher, tmp_path):
    load_events(wh, [ev("ann@example.com", "delivered", 5)], tmp_path)
    r = run(
        wh, clock, hasher, emails=["Ann@Example.com", " ann@example.com ", "", "ann@EXAMPLE.com"]
    )
    assert r.recipients == 1 and r.duplicates_in_list == 2
    assert r.statuses == {"Ann@Example.com": "delivered"}  # the caller's first form


def test_large_lists_are_queried_in_chunks(wh, ev, clock, hasher, tmp_path, monkeypatch):
    monkeypatch.setattr(watch_queries, "MAX_HASHES_PER_QUERY", 2)
    emails = [f"user{i}@example.com" for i in range(5)]
    load_events(
        wh,
        [ev(e, "delivered", 5) for e in emails[:4]]
        + [ev(emails[4], "dropped", 5, reason="Invalid")],
        tmp_path,
    )
    rec = RecordingWarehouse(wh)
    r = run(rec, clock, hasher, emails=emails)
    assert [len(p["hashes"]) for _, p in rec.queries] == [2, 2, 1]
    assert r.counts == {"delivered": 4, "bounce": 0, "dropped": 1, "deferred": 0, "unsettled": 0}


def test_empty_list_is_settled_without_a_query(wh, clock, hasher):
    rec = RecordingWarehouse(wh)
    r = run(rec, clock, hasher, emails=[])
    assert r.settled and r.recipients == 0 and rec.queries == []
    assert r.counts == dict.fromkeys(["delivered", "bounce", "dropped", "deferred", "unsettled"], 0)


def test_already_sent_returns_the_callers_addresses(wh, ev, hasher, tmp_path):
    load_events(
        wh,
        [
            ev("bob@example.org", "processed", 5),
            ev("dee@example.com", "dropped", 5),
            ev("cho@example.net", "delivered", 5, categories=["other"]),
            ev("ann@example.com", "delivered", -7200),
        ],
        tmp_path,
    )
    got = already_sent(EMAILS, CAT, SENT_AT, warehouse=wh, hasher=hasher)
    assert got == {"Bob@Example.org", "dee@example.com"}
    earlier = already_sent(EMAILS, CAT, SENT_AT - timedelta(days=1), warehouse=wh, hasher=hasher)
    assert earlier == {"Bob@Example.org", "dee@example.com", "ann@example.com"}


def test_default_timeout_scales_with_the_list_and_is_capped():
    assert default_timeout(0) == 900
    assert default_timeout(1_000) == 1_000
    assert default_timeout(10_000) == 1_900
    assert default_timeout(99_000) == 10_800 == default_timeout(1_000_000)
    # the old formula gave 9,000 s for 1,000 addresses
    assert default_timeout(1_000) < max(1_000 / 10 * 90, 300)


def test_the_default_timeout_is_used_when_none_given(wh, clock, hasher):
    r = run(
        wh,
        clock,
        hasher,
        emails=["x@example.com", "y@example.com"],
        timeout=None,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=60, maximum=600),
    )
    assert r.timeout == default_timeout(2) == 900.2 and r.elapsed == pytest.approx(900.2)


def test_default_warehouse_comes_from_the_data_dir(tmp_path, ev, clock, hasher):
    w = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    load_events(w, [ev(EMAILS[0], "delivered", 5)], tmp_path)
    r = watch(
        EMAILS[:1],
        CAT,
        SENT_AT,
        notify=False,
        hasher=hasher,
        clock=clock,
        sleep=clock.sleep,
        environ={"MAILPULSE_DATA_DIR": str(tmp_path)},
    )
    assert r.settled and r.counts["delivered"] == 1


def test_timestamps_in_any_usual_form_mean_the_same_instant():
    from datetime import datetime, timezone

    want = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    for v in (
        "2026-11-23T10:00:00Z",
        "2026-11-23T19:00:00+09:00",
        datetime(2026, 11, 23, 10),
        want.timestamp(),
        want,
    ):
        assert watcher_mod.to_utc(v) == want
    with pytest.raises(ValueError, match="ISO 8601"):
        watcher_mod.to_utc("yesterday")


def test_bad_arguments_say_what_to_do(wh, hasher):
    with pytest.raises(TypeError, match="list of addresses"):
        watch("ann@example.com", CAT, SENT_AT, warehouse=wh, hasher=hasher, notify=False)
    with pytest.raises(ValueError, match="category"):
        watch(EMAILS, " ", SENT_AT, warehouse=wh, hasher=hasher, notify=False)


def test_a_failing_notifier_does_not_lose_the_result(wh, ev, clock, hasher, tmp_path, caplog):
    load_events(wh, [ev(EMAILS[0], "delivered", 5)], tmp_path)

    class Broken:
        def post_watch_summary(self, result):
            raise RuntimeError("notifier bug")

    r = run(wh, clock, hasher, emails=EMAILS[:1], notify=True, notifier=Broken())
    assert r.settled and r.notification is None
    assert "notifier bug" in caplog.text


def test_top_reasons_group_reasons_that_differ_only_by_address(wh, ev, clock, hasher, tmp_path):
    load_events(
        wh,
        [
            ev(
                e,
                "bounce",
                5,
                bounce_class="hard",
                reason=f"550 5.1.1 <{e.lower()}>: Recipient address rejected",
            )
            for e in EMAILS[:3]
        ]
        + [ev(EMAILS[3], "dropped", 5, reason="Bounced Address")],
        tmp_path,
    )
    r = run(wh, clock, hasher)
    assert r.top_reasons() == [
        ("550 5.1.1 <address>: Recipient address rejected", 3),
        ("Bounced Address", 1),
    ]


# -- out of the box: a warehouse not created yet, a category that matches nothing ---------


class ClockedLog(logging.Handler):
    """WARNINGs of the watcher with the (fake) clock time they were logged at."""

    def __init__(self, clock):
        super().__init__(logging.WARNING)
        self.clock, self.records = clock, []

    def emit(self, record):
        self.records.append((self.clock.now, record.getMessage()))


@pytest.fixture
def clocked_log(clock):
    handler = ClockedLog(clock)
    logger = logging.getLogger("pipelines.watcher")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_a_warehouse_that_does_not_exist_yet_is_nothing_seen_yet(
    tmp_path, ev, clock, hasher, clocked_log
):
    path = tmp_path / "later" / "warehouse.duckdb"
    later = DuckDBWarehouse(str(path))
    # the first load happens 40 s into the watch (the loader creates the file)
    clock.at(40, lambda: load_events(later, [ev(e, "delivered", 5) for e in EMAILS], tmp_path))
    r = run(
        DuckDBWarehouse(str(path)),
        clock,
        hasher,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=10, multiplier=1, maximum=10),
    )
    assert r.settled and r.warehouse_ready and r.hint is None
    assert r.counts["delivered"] == 4 and r.polls == 5  # at 0, 10, 20, 30 nothing; at 40 all
    ((t, msg),) = clocked_log.records  # said once, at the first poll
    assert t == 0 and "nothing loaded so far" in msg and "load --follow" in msg


def test_a_warehouse_never_created_times_out_with_everyone_unsettled(tmp_path, clock, hasher):
    path = tmp_path / "never.duckdb"
    r = run(DuckDBWarehouse(str(path)), clock, hasher, timeout=60)
    assert r.timed_out and not r.warehouse_ready
    assert r.counts == {"delivered": 0, "bounce": 0, "dropped": 0, "deferred": 0, "unsettled": 4}
    assert "nothing loaded so far" in r.hint and "nothing loaded so far" in r.summary()
    assert r.as_dict()["warehouse_ready"] is False
    assert not path.exists()  # watching never creates a warehouse


def test_an_empty_warehouse_without_events_table_is_waited_for(tmp_path, clock, hasher):
    import duckdb

    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()  # a file, but nothing loaded
    r = run(DuckDBWarehouse(str(path)), clock, hasher, timeout=30)
    assert r.timed_out and not r.warehouse_ready and r.counts["unsettled"] == 4


def test_a_misspelled_category_says_where_the_events_are_at_the_first_poll(
    wh, hasher, clock, clocked_log, tmp_path
):
    right = EventFactory(hasher, "newsletter-2026-11")
    other = EventFactory(hasher, "promo")
    load_events(
        wh,
        [
            right(EMAILS[0], "delivered", 5),
            right(EMAILS[1], "delivered", 5),
            right(EMAILS[2], "bounce", 5, bounce_class="hard"),
            other(EMAILS[2], "delivered", 9),
            # before the send: not a hint
            EventFactory(hasher, "old-campaign")(EMAILS[3], "delivered", -600),
        ],
        tmp_path,
    )
    r = watch(
        EMAILS,
        "newsleter-2026-11",
        SENT_AT,
        warehouse=wh,
        hasher=hasher,
        notify=False,
        timeout=300,
        clock=clock,
        sleep=clock.sleep,
    )
    assert r.timed_out and r.counts["unsettled"] == 4
    assert r.other_categories == {"newsletter-2026-11": 3, "promo": 1}
    assert r.uncategorized == 0
    assert r.hint == (
        "no event in category 'newsleter-2026-11' for any of the 4 recipients "
        "since the send, but their events are in other categories: "
        "'newsletter-2026-11' (3), 'promo' (1); check the category name "
        "(--category)"
    )
    ((t, msg),) = clocked_log.records  # in the log at once, and only once over all polls
    assert t == 0 and r.hint in msg and r.polls > 3
    assert f"note: {r.hint}" in r.summary()
    d = r.as_dict()
    assert d["hint"] == r.hint and d["other_categories"] == {"newsletter-2026-11": 3, "promo": 1}


def test_cmc_mail_loaded_without_its_category_field_is_named(wh, hasher, clock, tmp_path):
    cmc = EventFactory(hasher, CAT, provider="cmc")
    load_events(wh, [cmc(e, "delivered", 5, categories=[]) for e in EMAILS[:3]], tmp_path)
    r = run(wh, clock, hasher, timeout=30)
    assert r.other_categories == {} and r.uncategorized == 3
    assert (
        "3 have events without any category (CMC mail loaded without "
        "--cmc-category-field?" in r.hint
    )


def test_no_hint_once_the_category_shows_up(wh, ev, hasher, clock, tmp_path):
    other = EventFactory(hasher, "promo")
    load_events(wh, [other(EMAILS[0], "delivered", 5)], tmp_path)
    clock.at(20, lambda: load_events(wh, [ev(e, "delivered", 15) for e in EMAILS], tmp_path))
    r = run(wh, clock, hasher)
    assert r.settled and r.hint is None and r.other_categories == {}


def test_recipients_with_no_event_at_all_get_no_hint(wh, hasher, clock, tmp_path):
    load_events(wh, [EventFactory(hasher, "promo")("zed@example.com", "delivered", 5)], tmp_path)
    r = run(wh, clock, hasher, timeout=30)
    assert r.timed_out and r.hint is None and r.warehouse_ready


def test_a_poll_policy_with_an_attempts_limit_ends_the_watch_timed_out(wh, clock, hasher):
    """The poll policy is a Backoff: given ``attempts``, that many polls and no more,
    although the timeout is far away."""
    r = run(
        wh,
        clock,
        hasher,
        timeout=3600,
        poll_policy=DEFAULT_POLL_POLICY.replace(initial=10, multiplier=2, attempts=3),
    )
    assert r.timed_out and not r.settled and r.polls == 3
    assert clock.sleeps == [10, 20] and r.counts["unsettled"] == len(EMAILS)
