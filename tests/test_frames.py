"""pipelines/frames.py on small frames built by hand: the enhanced-status-code parser and
grouping, the funnel's nesting, the empty-tail trim, and the names pipelines.analysis
still re-exports. (The same functions against a synthetic warehouse, through the
executed notebooks: tests/test_notebooks.py.)"""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines import frames


@pytest.mark.parametrize(
    "texts,code",
    [
        (("5.1.1", "550 5.1.1 user unknown"), "5.1.1"),
        ((None, "smtp; 550 5.1.1 user unknown"), "5.1.1"),
        (("2", "550 5.1.1 The email account that you tried to reach does not exist."), "5.1.1"),
        (("4.2.2", None), "4.2.2"),
        ((None, "452 4.2.2 The email account that you tried to reach is over quota"), "4.2.2"),
        ((None, "550-5.7.26 unauthenticated mail"), "5.7.26"),
        (("3", "retransmission timeout"), None),
        ((None, "version 1.2.3 of the server"), None),  # a version number is no code
        ((None, "client host 10.5.1.17 blocked"), None),  # nor part of an IP address
        ((None, None), None),
    ],
)
def test_enhanced_status_code(texts, code):
    assert frames.enhanced_status_code(*texts) == code


def reasons(*rows):
    return pd.DataFrame(
        rows, columns=["provider", "reason", "smtp_status", "bounce_class", "recipients", "events"]
    )


def test_the_same_code_from_several_providers_is_one_row():
    codes = frames.bounce_codes(
        reasons(
            (
                "sendgrid",
                "550 5.1.1 The email account that you tried to reach does not exist.",
                "5.1.1",
                "hard",
                29,
                29,
            ),
            ("ses", "smtp; 550 5.1.1 user unknown", "5.1.1", "hard", 25, 25),
            (
                "cmc",
                "550 5.1.1 The email account that you tried to reach does not exist.",
                "2",
                "hard",
                19,
                38,
            ),
            ("ses", "smtp; 452 4.2.2 mailbox full", "4.2.2", "soft", 3, 3),
            ("cmc", "rejected by the receiver's policy", "4", "block", 9, 18),
            ("cmc", "retransmission timeout", "03", "soft", 2, 4),
            ("cmc", "other error", "99", "hard", 2, 4),
        )
    )
    assert codes["status_code"].tolist() == ["5.1.1", "5.7.1", "4.2.2", "(no code)", "(no code)"]
    first = codes.iloc[0]
    assert (first.recipients, first.events, first.providers) == (73, 92, "cmc,sendgrid,ses")
    assert first.meaning == "permanent: bad destination mailbox (no such user)"
    assert first.code_basis == "reported"
    # CMC's status 4 (policy) is 5.7.1; 3 (timeout) and 99 are no one code
    policy = codes.iloc[1]
    assert (policy.recipients, policy.providers, policy.code_basis) == (9, "cmc", "cmc status 4")
    assert codes.iloc[2].meaning == "transient: mailbox full"
    # reasons without a code stay apart, one row each
    assert sorted(codes[codes.status_code == "(no code)"].example_reason) == [
        "other error",
        "retransmission timeout",
    ]
    assert codes["recipients"].sum() == 29 + 25 + 19 + 3 + 9 + 2 + 2


@pytest.mark.parametrize(
    "provider,status,reason,expect",
    [
        ("cmc", "1", "host unknown", ("5.1.2", "cmc status 1")),
        ("cmc", "02", "550 5.1.1 no such user", ("5.1.1", "reported")),
        ("cmc", "2", "user unknown", ("5.1.1", "cmc status 2")),
        ("cmc", "3", "retransmission timeout", ("(no code)", "none")),
        ("cmc", None, "rejected by the receiver's policy", ("(no code)", "none")),
        ("sendgrid", "4", "rejected", ("(no code)", "none")),  # only CMC's numbers are mapped
    ],
)
def test_status_code_of(provider, status, reason, expect):
    assert frames.status_code_of(provider, status, reason) == expect


def test_funnel_stages_are_nested():
    t = pd.Timestamp("2026-11-20T10:00:00Z")
    recipients = pd.DataFrame(
        {
            "delivered_ts": [t, t, t, t, None, None],
            "opened": [True, True, False, False, True, False],
            "clicked": [True, False, True, False, True, False],  # row 2: a click, no pixel
            "status": ["delivered"] * 4 + ["bounce", "deferred"],
        }
    )
    f = frames.campaign_funnel(recipients)
    assert f.index.tolist() == ["sent", "delivered", "opened", "clicked"]
    # engagement of recipients without a delivered event does not count past "delivered"
    assert f["recipients"].tolist() == [6, 4, 3, 2]
    assert f["share_of_sent"].tolist() == pytest.approx([1, 4 / 6, 3 / 6, 2 / 6])
    assert f["share_of_previous"].tolist() == pytest.approx([1, 4 / 6, 3 / 4, 2 / 3])
    empty = frames.campaign_funnel(recipients.iloc[0:0])
    assert empty["recipients"].tolist() == [0, 0, 0, 0]


def test_trim_empty_tail_keeps_inner_quiet_days():
    df = pd.DataFrame(
        {
            "event_date": pd.to_datetime(
                ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-21"]
            ),
            "requests": [5, 0, 7, 3, 0, 0],
            "bounces": [0, 0, 1, 0, 2, 1],
        }
    )
    out = frames.trim_empty_tail(df)
    assert out["event_date"].dt.strftime("%m-%d").tolist() == ["11-17", "11-18", "11-19", "11-20"]
    assert frames.trim_empty_tail(df.assign(requests=0)).empty


def test_frames_and_alerts_are_separate_rooms():
    """Issue 15: the notebooks' frames live in pipelines.frames, the DAG's alerting in
    pipelines.analysis, which does not know the frames (no import cycle)."""
    from pipelines import analysis

    assert not hasattr(analysis, "bounce_domains") and not hasattr(analysis, "plot_rates")
    assert callable(frames.delivery_health) and callable(analysis.find_breaches)
