"""Slack notifications through the real slack_sdk against the local Slack-compatible server.

Retry waits go through an injected sleep that records them (nothing sleeps for real)."""

from __future__ import annotations

import csv
import io
import json
import logging
import socket

import pytest
from slack_server import SlackServer
from watch_support import SENT_AT, EventFactory, FakeClock, load_events

from pipelines.backoff import Backoff
from pipelines.slack import (
    CONNECTION_ERROR_RETRY,
    RATE_LIMIT_RETRY,
    SERVER_ERROR_RETRY,
    ConsoleNotifier,
    SlackConfig,
    SlackConfigError,
    SlackNotifier,
    SlackRetryPolicy,
    notifier_from_env,
    watch_blocks,
)
from pipelines.warehouse.duckdb import DuckDBWarehouse
from pipelines.watcher import watch

CAT = "spring-sale"
EMAILS = [
    "Ann@Example.com",
    "bob@example.org",
    "cho@example.net",
    "dee@example.com",
    "eve@example.com",
    "fay@example.com",
]


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


def notifier(server: SlackServer, sleeps, token=None, channel=None, **policy) -> SlackNotifier:
    cfg = SlackConfig(
        token=token or server.token, channel=channel or server.channel, api_url=server.base_url
    )
    return SlackNotifier(cfg, policy=SlackRetryPolicy(**policy), sleep=sleeps)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A real WatchResult: 2 delivered, 3 bounced (hard, soft, block), 1 dropped... and
    a second watch with deferred / never-seen recipients that times out."""
    from conftest import TEST_HASH_KEY

    from pipelines.hashing import EmailHasher

    tmp = tmp_path_factory.mktemp("slackwh")
    hasher = EmailHasher(TEST_HASH_KEY)
    ev = EventFactory(hasher, CAT)
    wh = DuckDBWarehouse(str(tmp / "w.duckdb"))
    load_events(
        wh,
        [
            ev(EMAILS[0], "delivered", 5),
            ev(EMAILS[1], "delivered", 5),
            ev(
                EMAILS[2],
                "bounce",
                5,
                bounce_class="hard",
                reason="550 5.1.1 <cho@example.net>: user unknown",
                smtp_status="5.1.1",
            ),
            ev(EMAILS[3], "bounce", 5, bounce_class="soft", reason="452 mailbox full"),
            ev(EMAILS[4], "bounce", 5, bounce_class="block", reason="554 blocked by policy"),
            ev(EMAILS[5], "dropped", 5, reason="Bounced Address"),
            ev("late@example.com", "deferred", 5, reason="421 try later"),
        ],
        tmp,
    )
    clock = FakeClock()
    settled = watch(
        EMAILS,
        CAT,
        SENT_AT,
        warehouse=wh,
        hasher=hasher,
        notify=False,
        clock=clock,
        sleep=clock.sleep,
    )
    clock2 = FakeClock()
    timed_out = watch(
        EMAILS[:2] + ["late@example.com", "ghost@example.com"],
        CAT,
        SENT_AT,
        warehouse=wh,
        hasher=hasher,
        notify=False,
        timeout=60,
        clock=clock2,
        sleep=clock2.sleep,
    )
    assert settled.settled and timed_out.timed_out
    return {"settled": settled, "timed_out": timed_out}


def _text(blocks) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_one_message_with_the_counts_and_the_failed_addresses_as_csv_in_its_thread(
    slack_server, sleeps, result
):
    r = result["settled"]
    report = notifier(slack_server, sleeps).post_watch_summary(r)
    assert report.ok and report.ts and report.file_id
    (msg,) = slack_server.messages
    assert msg["channel"] == slack_server.channel and msg["ts"] == report.ts
    blocks = msg["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "emoji": True, "text": f"Send watch: {CAT}"},
    }
    fields = {f["text"].split("\n")[0]: f["text"] for f in blocks[2]["fields"]}
    assert fields["*Recipients*"] == "*Recipients*\n6"
    assert fields["*Delivered*"] == "*Delivered*\n2 (33.3%)"
    assert fields["*Bounced*"] == "*Bounced*\n3 (50.0%)\nhard 1 / soft 1 / block 1"
    assert fields["*Dropped*"] == "*Dropped*\n1 (16.7%)"
    assert fields["*Deferred*"] == "*Deferred*\n0 (0.0%)"
    assert fields["*Unsettled*"].startswith("*Unsettled*\n0 (0.0%)")
    assert "settled after" in _text(blocks) and "timed out" not in _text(blocks)
    assert "550 5.1.1 <address>: user unknown" in _text(blocks)  # top reasons, masked
    assert "2 delivered, 3 bounced, 1 dropped" in msg["text"]  # the notification text

    # files_upload_v2: three calls, the CSV in the message's thread
    methods = [q.method for q in slack_server.requests]
    assert methods == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    (f,) = slack_server.completed_files()
    assert f["id"] == report.file_id and f["thread_ts"] == report.ts
    assert f["channel"] == slack_server.channel and f["filename"].endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(f["content"].decode())))
    assert sorted(row["email"] for row in rows) == sorted(EMAILS[2:])  # exactly the failed
    by = {row["email"]: row for row in rows}
    assert by["cho@example.net"]["bounce_class"] == "hard"
    assert by["cho@example.net"]["smtp_status"] == "5.1.1"
    assert by["fay@example.com"]["status"] == "dropped"
    assert sleeps == []


def test_timed_out_message_says_so_and_counts_unsettled(slack_server, sleeps, result):
    report = notifier(slack_server, sleeps).post_watch_summary(result["timed_out"])
    assert report.ok and report.file_id is None  # nothing failed: no CSV
    (msg,) = slack_server.messages
    text = _text(msg["blocks"])
    assert "*timed out* after 1m00s: 2 recipients not settled" in text
    fields = {f["text"].split("\n")[0]: f["text"] for f in msg["blocks"][2]["fields"]}
    assert fields["*Deferred*"] == "*Deferred*\n1 (25.0%)"
    assert fields["*Unsettled*"] == "*Unsettled*\n2 (50.0%)\nnever seen 1"
    assert "TIMED OUT" in msg["text"]
    assert [q.method for q in slack_server.requests] == ["chat.postMessage"]


def test_rate_limit_waits_retry_after_then_posts(slack_server, sleeps, result):
    slack_server.fail("chat.postMessage", status=429, retry_after=7)
    slack_server.fail("files.getUploadURLExternal", status=429, retry_after=2, times=2)
    report = notifier(slack_server, sleeps).post_watch_summary(result["settled"])
    assert report.ok and report.file_id
    assert sleeps == [7, 2, 2]  # exactly what Retry-After asked for
    assert [q.status for q in slack_server.calls("chat.postMessage")] == [429, 200]
    assert len(slack_server.messages) == 1 and len(slack_server.completed_files()) == 1


def test_rate_limit_beyond_the_retries_is_logged_not_raised(slack_server, sleeps, result, caplog):
    slack_server.fail("chat.postMessage", status=429, retry_after=1, times=10)
    report = notifier(
        slack_server, sleeps, rate_limit=RATE_LIMIT_RETRY.replace(attempts=3)
    ).post_watch_summary(result["settled"])
    assert not report.ok and report.ts is None
    assert sleeps == [1, 1] and len(slack_server.calls("chat.postMessage")) == 3
    assert "ratelimited" in caplog.text
    assert slack_server.calls("files.getUploadURLExternal") == []  # no thread to post into


def test_a_retry_after_longer_than_allowed_gives_up_at_once(slack_server, sleeps, result):
    slack_server.fail("chat.postMessage", status=429, retry_after=3600)
    report = notifier(
        slack_server, sleeps, rate_limit=RATE_LIMIT_RETRY.replace(maximum=60)
    ).post_watch_summary(result["settled"])
    assert not report.ok and sleeps == []


def test_server_errors_are_retried_then_succeed(slack_server, sleeps, result):
    slack_server.fail("chat.postMessage", status=500, times=2)
    assert SERVER_ERROR_RETRY == Backoff(
        initial=0.5, maximum=30.0, multiplier=2.0, attempts=3, jitter=1.0
    )
    report = notifier(slack_server, sleeps).post_watch_summary(result["settled"])
    assert report.ok and len(slack_server.messages) == 1
    assert [q.status for q in slack_server.calls("chat.postMessage")] == [500, 500, 200]
    # exponential backoff 0.5 * 2**attempt, plus up to 1 s of jitter
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] < 1.5 and 1.0 <= sleeps[1] < 2.0


def test_the_handlers_take_their_delays_from_the_backoff_policy(slack_server, sleeps, result):
    """slack_sdk's handlers wait exactly what the shared Backoff says (no jitter here):
    server errors back off, a 429 without Retry-After waits the policy's delay."""
    slack_server.fail("chat.postMessage", status=500, times=3)
    report = notifier(
        slack_server,
        sleeps,
        server_errors=Backoff(initial=0.25, maximum=1.0, multiplier=3.0, attempts=4),
    ).post_watch_summary(result["settled"])
    assert report.ok and sleeps == [0.25, 0.75, 1.0]
    assert [q.status for q in slack_server.calls("chat.postMessage")] == [500, 500, 500, 200]

    slack_server.reset()
    sleeps.clear()
    slack_server.fail("chat.postMessage", status=429, times=2)  # no Retry-After header
    report = notifier(
        slack_server,
        sleeps,
        rate_limit=Backoff(initial=2.0, maximum=120.0, multiplier=2.0, attempts=4),
    ).post_watch_summary(result["settled"])
    assert report.ok and sleeps == [2.0, 4.0]


def test_server_errors_beyond_the_retries_are_logged(slack_server, sleeps, result, caplog):
    slack_server.fail("chat.postMessage", status=503, times=5)
    report = notifier(
        slack_server, sleeps, server_errors=SERVER_ERROR_RETRY.replace(attempts=2)
    ).post_watch_summary(result["settled"])
    assert not report.ok and len(slack_server.calls("chat.postMessage")) == 2
    assert "HTTP 503" in caplog.text


@pytest.mark.parametrize(
    "fault,expected",
    [
        ("token", "invalid_auth: the token was rejected: check SLACK_BOT_TOKEN"),
        ("channel", "channel_not_found: no such channel: check MAILPULSE_SLACK_CHANNEL"),
    ],
)
def test_auth_and_channel_errors_are_logged_and_the_watch_result_is_still_returned(
    slack_server, sleeps, tmp_path, hasher, caplog, fault, expected
):
    ev = EventFactory(hasher, CAT)
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(
        wh,
        [
            ev(EMAILS[0], "delivered", 5),
            ev(EMAILS[1], "bounce", 5, bounce_class="hard", reason="gone"),
        ],
        tmp_path,
    )
    n = notifier(
        slack_server,
        sleeps,
        token="xoxb-wrong" if fault == "token" else None,
        channel="C0NOSUCHCHAN" if fault == "channel" else None,
    )
    clock = FakeClock()
    with caplog.at_level(logging.ERROR, logger="pipelines.slack"):
        r = watch(
            EMAILS[:2],
            CAT,
            SENT_AT,
            warehouse=wh,
            hasher=hasher,
            notifier=n,
            clock=clock,
            sleep=clock.sleep,
        )
    assert r.counts == {"delivered": 1, "bounce": 1, "dropped": 0, "deferred": 0, "unsettled": 0}
    assert r.notification.errors and expected in r.notification.errors[0]
    assert expected in caplog.text
    assert slack_server.messages == [] and sleeps == []
    assert slack_server.calls("chat.postMessage")[0].error == expected.split(":")[0]


def test_an_upload_failure_keeps_the_message(slack_server, sleeps, result, caplog):
    slack_server.fail("upload", status=500)
    report = notifier(slack_server, sleeps).post_watch_summary(result["settled"])
    assert report.ts and report.file_id is None and len(report.errors) == 1
    assert "file upload" in report.errors[0]
    assert len(slack_server.messages) == 1 and slack_server.completed_files() == []


def test_connection_errors_are_retried_a_bounded_number_of_times(sleeps, result, caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = SlackConfig(token="xoxb-x", channel="C1", api_url=f"http://127.0.0.1:{port}/api/")
    n = SlackNotifier(
        cfg,
        policy=SlackRetryPolicy(connection_errors=CONNECTION_ERROR_RETRY.replace(initial=0.01)),
        sleep=sleeps,
    )
    report = n.post_watch_summary(result["settled"])
    assert not report.ok and len(sleeps) == 2
    assert "URLError" in report.errors[0]


def test_post_message_is_reusable_for_alerts(slack_server, sleeps):
    n = notifier(slack_server, sleeps)
    posted = n.post_message(
        "outcomes anomaly: bounce rate 12% on 2026-11-23",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*bounce rate* 12%"}}],
    )
    assert posted == {"channel": slack_server.channel, "ts": slack_server.messages[0]["ts"]}
    reply = n.post_message("details", thread_ts=posted["ts"])
    assert reply and slack_server.messages[1]["thread_ts"] == posted["ts"]
    # "#name" works too; an unknown channel is logged, not raised
    assert n.post_message("hi", channel="#mailpulse-alerts")["channel"] == slack_server.channel
    assert n.post_message("hi", channel="#nope") is None


def test_configuration_comes_from_the_environment(slack_server):
    n = notifier_from_env(slack_server.env())
    assert isinstance(n, SlackNotifier)
    assert n.config == SlackConfig(slack_server.token, slack_server.channel, slack_server.base_url)
    assert slack_server.token not in repr(n.config) + repr(n)
    assert isinstance(notifier_from_env({}), ConsoleNotifier)
    with pytest.raises(SlackConfigError, match="MAILPULSE_SLACK_CHANNEL"):
        notifier_from_env({"SLACK_BOT_TOKEN": "xoxb-1"})
    with pytest.raises(SlackConfigError, match="not an http"):
        notifier_from_env(
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "MAILPULSE_SLACK_CHANNEL": "C1",
                "MAILPULSE_SLACK_API_URL": "slack.com/api",
            }
        )
    n2 = notifier_from_env({"SLACK_BOT_TOKEN": "xoxb-1", "MAILPULSE_SLACK_CHANNEL": "C1"})
    assert n2.config.api_url == "https://slack.com/api/"


def test_without_a_token_the_summary_prints_to_the_console(result):
    out = io.StringIO()
    report = ConsoleNotifier(out).post_watch_summary(result["settled"])
    text = out.getvalue()
    assert report.ok and f"category {CAT!r}" in text and "settled" in text
    assert "bounced     3 (50.0%)  hard 1 / soft 1 / block 1" in text


def test_watch_posts_through_the_environment(slack_env, tmp_path, hasher):
    ev = EventFactory(hasher, CAT)
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(wh, [ev(EMAILS[0], "dropped", 5, reason="Invalid")], tmp_path)
    clock = FakeClock()
    r = watch(EMAILS[:1], CAT, SENT_AT, warehouse=wh, hasher=hasher, clock=clock, sleep=clock.sleep)
    assert r.notification.ok and len(slack_env.messages) == 1
    (f,) = slack_env.completed_files()
    assert f["content"].decode().splitlines()[1].startswith("Ann@Example.com,dropped")


def test_blocks_stay_within_slack_limits(result):
    r = result["settled"]
    r2 = type(r)(**{**r.__dict__, "category": "c" * 400})
    blocks = watch_blocks(r2)
    assert len(blocks[0]["text"]["text"]) <= 150
    assert all(len(b["fields"]) <= 10 for b in blocks if "fields" in b)
    assert all(
        len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section" and "text" in b
    )


# -- the notification's total time budget (Slack never holds the result) -------------------


def test_retry_after_beyond_the_budget_is_not_waited_for(slack_server, result, caplog):
    """The measured case: a 429 with Retry-After: 60. Before, the watch result was held
    for 186 s (three waits of 60 s); now the default 30 s budget gives up at once."""
    slack_server.fail("chat.postMessage", status=429, retry_after=60, times=10)
    clock = FakeClock()
    cfg = SlackConfig(slack_server.token, slack_server.channel, slack_server.base_url)
    n = SlackNotifier(cfg, sleep=clock.sleep, clock=clock)
    assert n.policy.total_budget == 30.0
    with caplog.at_level(logging.ERROR, logger="pipelines.slack"):
        report = n.post_watch_summary(result["settled"])
    assert not report.ok and report.ts is None and clock.sleeps == []
    assert len(slack_server.calls("chat.postMessage")) == 1
    assert "left of the notification budget" in caplog.text


def test_waits_stop_at_the_budget_and_later_calls_are_skipped(slack_server, result, caplog):
    slack_server.fail("chat.postMessage", status=429, retry_after=10, times=2)
    slack_server.fail("files.getUploadURLExternal", status=429, retry_after=10, times=5)
    clock = FakeClock()
    cfg = SlackConfig(slack_server.token, slack_server.channel, slack_server.base_url)
    n = SlackNotifier(
        cfg,
        policy=SlackRetryPolicy(rate_limit=RATE_LIMIT_RETRY.replace(attempts=6), total_budget=30),
        sleep=clock.sleep,
        clock=clock,
    )
    with caplog.at_level(logging.ERROR, logger="pipelines.slack"):
        report = n.post_watch_summary(result["settled"])
    # the message got through after 20 s of waits; the upload used the last 10 s and gave up
    assert report.ts and report.file_id is None
    assert clock.sleeps == [10, 10, 10] and clock.now == 30
    assert len(slack_server.calls("files.getUploadURLExternal")) == 2
    assert "budget" in report.errors[0]
    # the next notification has a budget of its own
    slack_server.reset()
    again = n.post_watch_summary(result["settled"])
    assert again.ok and again.file_id


def test_nothing_left_skips_the_call(slack_server, result):
    clock = FakeClock()
    cfg = SlackConfig(slack_server.token, slack_server.channel, slack_server.base_url)
    n = SlackNotifier(cfg, policy=SlackRetryPolicy(total_budget=0), sleep=clock.sleep, clock=clock)
    report = n.post_watch_summary(result["settled"])
    assert report.errors == [
        "Slack chat.postMessage skipped: the notification budget of 0s "
        "is used up (SlackRetryPolicy.total_budget)"
    ]
    assert slack_server.requests == []


def test_a_slow_slack_is_cut_off_at_the_budget_in_real_time(slack_server, result, caplog):
    """No injected clock: a Slack that answers after 20 s, with a 2 s budget, costs the
    caller about 2 s (the request timeout is cut to what is left), not 20."""
    import time

    slack_server.fail("chat.postMessage", delay=20)
    cfg = SlackConfig(slack_server.token, slack_server.channel, slack_server.base_url)
    n = SlackNotifier(
        cfg,
        policy=SlackRetryPolicy(
            total_budget=2, connection_errors=CONNECTION_ERROR_RETRY.replace(attempts=4)
        ),
    )
    t0 = time.monotonic()
    report = n.post_watch_summary(result["settled"])
    took = time.monotonic() - t0
    assert not report.ok and 1.5 <= took < 5, took
    assert n.client.timeout == n.policy.request_timeout  # restored for the next one


def test_watch_returns_its_result_within_the_budget(slack_server, tmp_path, hasher):
    """End to end through watch(): the result comes back although Slack rate-limits
    with Retry-After: 60, and the failure is in the result."""
    import time

    ev = EventFactory(hasher, CAT)
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(wh, [ev(EMAILS[0], "delivered", 5)], tmp_path)
    slack_server.fail("chat.postMessage", status=429, retry_after=60, times=10)
    cfg = SlackConfig(slack_server.token, slack_server.channel, slack_server.base_url)
    t0 = time.monotonic()
    r = watch(EMAILS[:1], CAT, SENT_AT, warehouse=wh, hasher=hasher, notifier=SlackNotifier(cfg))
    assert time.monotonic() - t0 < 10
    assert r.settled and r.counts["delivered"] == 1
    assert r.notification.errors and "ratelimited" in r.notification.errors[0]
