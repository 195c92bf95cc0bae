"""End to end with real processes, the embedded fresh-data set-up of the README:

    mailpulse serve --rotate-seconds 2   (signed SendGrid webhooks -> archive)
    mailpulse load --follow --interval 2 (archive -> DuckDB, incremental)
    wait_for_events(...)                 (the campaign script, in this process)

A campaign script calls ``wait_for_events`` right after its send, before any event has
reached the warehouse (or the warehouse exists); the provider's webhooks arrive at the
collector; the watcher returns exact counts and posts the bounce summary to Slack
(real slack_sdk, local server) within seconds.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import TEST_HASH_KEY
from freshness_support import Stack, campaign_events

from pipelines.watcher import watch

pytestmark = pytest.mark.slow
CATEGORY = "winter-sale"


def test_webhooks_reach_wait_for_events_through_serve_and_load_follow(tmp_path, slack_env):
    emails = [f"Buyer{i:03d}@shop{i % 3}.example" for i in range(30)]
    fates = {
        e: (
            "delivered"
            if i % 6 < 3
            else "bounce"
            if i % 6 == 3
            else "blocked"
            if i % 6 == 4
            else "dropped"
        )
        for i, e in enumerate(emails)
    }
    stack = Stack(tmp_path, TEST_HASH_KEY, rotate_seconds=2, interval=2).start()
    try:
        sent_at = datetime.now(timezone.utc) - timedelta(seconds=5)
        t0 = int(time.time())
        first, later = campaign_events(emails, CATEGORY, t0, fates)
        import threading

        result = {}

        def script():
            # right after the send: the warehouse may not even exist yet
            result["r"] = watch(emails, CATEGORY, sent_at, timeout=120, warehouse=stack.warehouse)

        t = threading.Thread(target=script)
        t.start()
        stack.post_sendgrid(first)
        time.sleep(1)
        acked = stack.post_sendgrid(later)
        t.join(timeout=180)
        assert not t.is_alive(), stack.log("follow.log")
        r = result["r"]
        settled_after = time.time() - acked
    finally:
        stack.stop()
    assert not r.timed_out, (r.counts, stack.log("follow.log"), stack.log("serve.log"))
    assert r.counts == {"delivered": 15, "bounce": 10, "dropped": 5, "deferred": 0, "unsettled": 0}
    # acknowledged -> settled: publish (2 s) + one follow interval (2 s) + the load
    assert settled_after < 60, settled_after
    msgs = slack_env.messages
    assert len(msgs) == 1 and CATEGORY in msgs[0]["text"]
    assert "Buyer" not in str(msgs) and "buyer" not in str(msgs)  # no plain address
    follow = stack.log("follow.log")
    assert "new events" in follow and "stopped after" in follow
