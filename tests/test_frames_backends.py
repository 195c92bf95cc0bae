"""The notebook frames (pipelines/frames.py) on both warehouses: a small hand-made day
loaded into DuckDB and into the BigQuery emulator, derived tables computed by the real
queries, and every view checked against the answer worked out by hand below."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from test_queries import event_from_json, load_events, warehouse_factory  # noqa: F401

from pipelines import frames
from pipelines.outcomes import compute_outcomes

D1, D2 = date(2026, 11, 20), date(2026, 11, 21)


def ev(key, provider, event_type, ts, domain, **extra):
    return {
        "provider": provider,
        "event_type": event_type,
        "event_ts": ts,
        "message_id": f"m-{key}",
        "email_hash": f"h-{key}",
        "recipient_domain": domain,
        "categories": ["spring"],
        **extra,
    }


# gmail.com (Gmail): g1 opens and clicks, g2 opens, g3 clicks without an open pixel,
#   g4 hard-bounces 5.1.1 (SendGrid), x1 is sent late on D1 and bounces after midnight;
# docomo.ne.jp (docomo): d1 hard-bounces 5.1.1 (SES), d2 fails at CMC, reported twice
#   (a failed delivery classed undetermined, then a bounce classed block; no RFC code);
# tiny.example (other): one recipient whose open arrives without a delivered event.
EVENTS = [
    ev("g1", "sendgrid", "processed", "2026-11-20T09:00:00Z", "gmail.com"),
    ev("g1", "sendgrid", "delivered", "2026-11-20T09:00:05Z", "gmail.com"),
    ev("g1", "sendgrid", "open", "2026-11-20T10:00:00Z", "gmail.com"),
    ev("g1", "sendgrid", "click", "2026-11-20T10:01:00Z", "gmail.com", url="https://x.test/a"),
    ev("g2", "sendgrid", "processed", "2026-11-20T09:00:00Z", "gmail.com"),
    ev("g2", "sendgrid", "delivered", "2026-11-20T09:00:06Z", "gmail.com"),
    ev("g2", "sendgrid", "open", "2026-11-21T07:00:00Z", "gmail.com"),
    ev("g3", "sendgrid", "processed", "2026-11-20T09:00:00Z", "gmail.com"),
    ev("g3", "sendgrid", "delivered", "2026-11-20T09:00:07Z", "gmail.com"),
    ev("g3", "sendgrid", "click", "2026-11-20T11:00:00Z", "gmail.com", url="https://x.test/b"),
    ev("g4", "sendgrid", "processed", "2026-11-20T09:00:00Z", "gmail.com"),
    ev(
        "g4",
        "sendgrid",
        "bounce",
        "2026-11-20T09:00:09Z",
        "gmail.com",
        bounce_class="hard",
        smtp_status="5.1.1",
        reason="550 5.1.1 The email account that you tried to reach does not exist.",
    ),
    ev("x1", "sendgrid", "processed", "2026-11-20T23:59:00Z", "gmail.com"),
    ev(
        "x1",
        "sendgrid",
        "bounce",
        "2026-11-21T00:10:00Z",
        "gmail.com",
        bounce_class="hard",
        smtp_status="5.2.2",
        reason="552 5.2.2 mailbox full",
    ),
    ev("d1", "ses", "processed", "2026-11-20T09:00:00Z", "docomo.ne.jp"),
    ev(
        "d1",
        "ses",
        "bounce",
        "2026-11-20T09:00:10Z",
        "docomo.ne.jp",
        bounce_class="hard",
        smtp_status="5.1.1",
        reason="smtp; 550 5.1.1 user unknown",
    ),
    ev("d2", "cmc", "processed", "2026-11-20T09:00:00Z", "docomo.ne.jp"),
    ev(
        "d2",
        "cmc",
        "bounce",
        "2026-11-20T09:00:11Z",
        "docomo.ne.jp",
        bounce_class="undetermined",
        reason="rejected by the receiver's policy",
    ),
    ev(
        "d2",
        "cmc",
        "bounce",
        "2026-11-20T09:00:12Z",
        "docomo.ne.jp",
        bounce_class="block",
        smtp_status="4",
        reason="rejected by the receiver's policy",
    ),
    ev("t1", "sendgrid", "processed", "2026-11-20T09:00:00Z", "tiny.example"),
    ev("t1", "sendgrid", "open", "2026-11-20T12:00:00Z", "tiny.example"),
]


@pytest.fixture
def wh(warehouse_factory, tmp_path):
    w = warehouse_factory()
    load_events(w, [event_from_json(e) for e in EVENTS], tmp_path / "events")
    compute_outcomes(w, D1, D2)
    return w


def test_frames_on_both_warehouses(wh):
    # D2 has late reports only (x1's bounce): the window ends on D1
    assert frames.data_window(wh) == (D1, D1)
    assert frames.data_window(wh, None, D2) == (D1, D2)  # an explicit END is kept ...
    daily = frames.delivery_health(wh, D1, D2)
    assert sorted(daily["event_date"].dt.date.unique()) == [D1]  # ... but not plotted

    mailbox = frames.mailbox_daily(wh, D1, D2)
    got = {
        r.mailbox_provider: (r.requests, r.delivered, r.bounces, r.blocks)
        for r in mailbox.itertuples()
    }
    # d2's first bounce report is classed undetermined, so it is a bounce, not a block
    assert got == {"Gmail": (5, 3, 1, 0), "docomo": (2, 0, 2, 0), "other": (1, 0, 0, 0)}
    summary = frames.mailbox_summary(mailbox)
    assert summary["mailbox_provider"].tolist() == ["Gmail", "docomo", "other"]
    assert summary.set_index("mailbox_provider").loc["Gmail", "bounce_rate"] == pytest.approx(0.2)

    ranked = frames.domain_ranking(wh, D1, D1, min_requests=2)
    assert ranked["recipient_domain"].tolist() == ["docomo.ne.jp", "gmail.com"]
    assert ranked["bounce_rate"].tolist() == pytest.approx([1.0, 0.2])
    assert ranked["requests"].tolist() == [2, 5]
    assert ranked.attrs["domains_below_min"] == 1 and ranked.attrs["requests_below_min"] == 1

    codes = frames.bounce_codes(frames.bounce_reasons(wh, D1, D1))
    rows = {c.status_code: c for c in codes.itertuples()}
    assert set(rows) == {"5.1.1", "5.7.1"}  # x1's 5.2.2 is after the window
    assert (rows["5.1.1"].recipients, rows["5.1.1"].providers) == (2, "sendgrid,ses")
    # d2: one recipient of two reports, the block with CMC's status 4 kept
    cmc = rows["5.7.1"]
    assert (cmc.recipients, cmc.events, cmc.bounce_classes, cmc.code_basis) == (
        1,
        2,
        "block",
        "cmc status 4",
    )
    assert frames.bounce_codes(frames.bounce_reasons(wh, D1, D2))["status_code"].tolist() == [
        "5.1.1",
        "5.2.2",
        "5.7.1",
    ]

    window = frames.send_window(
        wh,
        "spring",
        datetime(2026, 11, 20, tzinfo=timezone.utc),
        datetime(2026, 11, 20, 23, 59, 59, tzinfo=timezone.utc),
    )
    recipients = frames.campaign_recipients(wh, window)
    funnel = frames.campaign_funnel(recipients)
    assert funnel["recipients"].to_dict() == {"sent": 8, "delivered": 3, "opened": 3, "clicked": 2}
    funnels = frames.campaign_funnels(wh, D1, D1).set_index("category")
    assert funnels.loc["spring", ["sent", "delivered", "opened", "clicked"]].tolist() == [
        8,
        3,
        3,
        2,
    ]
    assert funnels.loc["spring", "click_share"] == pytest.approx(2 / 3)
    by_mailbox = frames.campaign_breakdown(recipients, by="mailbox_provider")
    assert by_mailbox.loc["Gmail", ["recipients", "opened", "clicked"]].tolist() == [5, 3, 2]
    assert by_mailbox.loc["docomo", "bounce_rate"] == 1.0
