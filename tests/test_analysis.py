"""pipelines.analysis: rates recomputed from sums, thresholds with a minimum volume, the
alert text and where it goes (no Slack token: logged; Slack: the local server)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pandas as pd
import pytest

from pipelines import analysis
from pipelines.analysis import Breach, ConfigurationError, Thresholds


def outcomes(*rows):
    cols = (
        "event_date",
        "category",
        "provider",
        "requests",
        "processed",
        "delivered",
        "bounces",
        "blocks",
        "spam_reports",
        "unique_opens",
    )
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_category_daily_sums_providers_and_recomputes_rates():
    df = outcomes(
        ("2026-11-20", "promo", "sendgrid", 100, 100, 90, 10, 0, 0, 9),
        ("2026-11-20", "promo", "ses", 300, 300, 290, 2, 8, 3, 29),
        ("2026-11-20", "empty", "ses", 0, 0, 0, 0, 0, 0, 0),
    )
    daily = analysis.category_daily(df)
    promo = daily[daily.category == "promo"].iloc[0]
    assert (promo.requests, promo.bounces, promo.blocks) == (400, 12, 8)
    # not the mean of the per-provider rates (0.10 and 0.0067)
    assert promo.bounce_rate == pytest.approx(12 / 400)
    assert promo.block_rate == pytest.approx(8 / 400)
    assert promo.spam_report_rate == pytest.approx(3 / 380)
    assert promo.open_rate == pytest.approx(38 / 380)
    empty = daily[daily.category == "empty"].iloc[0]
    assert pd.isna(empty.bounce_rate) and pd.isna(empty.spam_report_rate)


def test_breaches_respect_thresholds_and_minimum_volume():
    daily = analysis.category_daily(
        outcomes(
            ("2026-11-20", "big-bouncer", "sendgrid", 200, 200, 180, 11, 9, 0, 0),  # 5.5 %
            ("2026-11-20", "at-limit", "sendgrid", 200, 200, 190, 10, 0, 0, 0),  # 5.0 %: not above
            ("2026-11-20", "small", "sendgrid", 99, 99, 50, 49, 0, 0, 0),  # below volume
            ("2026-11-20", "complaints", "sendgrid", 1000, 1000, 1000, 0, 0, 4, 0),  # 0.4 %
        )
    )
    found = analysis.find_breaches(
        daily, Thresholds(bounce_rate=0.05, spam_report_rate=0.003, min_volume=100)
    )
    assert [(b.category, b.metric, b.numerator, b.denominator) for b in found] == [
        ("big-bouncer", "bounce_rate", 11, 200),
        ("complaints", "spam_report_rate", 4, 1000),
    ]
    # a volume of 99 alerts once the minimum is lowered
    lower = analysis.find_breaches(daily, Thresholds(min_volume=99))
    assert ("small", "bounce_rate") in [(b.category, b.metric) for b in lower]


@pytest.mark.parametrize(
    "kwargs",
    [{"bounce_rate": 1.5}, {"spam_report_rate": -0.1}, {"min_volume": -1}, {"bounce_rate": "0.05"}],
)
def test_thresholds_reject_values_that_cannot_work(kwargs):
    with pytest.raises(ConfigurationError, match="must be"):
        Thresholds(**kwargs)


BREACH = Breach("2026-11-20", "promo", "bounce_rate", 0.08, 0.05, 16, 200, 200)


def test_alert_without_token_is_logged_not_posted(caplog):
    caplog.set_level(logging.WARNING, logger="pipelines.analysis")
    done = analysis.post_rate_alert([BREACH.as_dict()], day="2026-11-20", token=None, channel=None)
    assert done["posted"] is False and done["reason"] == "no Slack token"
    assert (
        "*promo*: bounce rate (bounces / requests) 8.00% > 5.00% (16 of 200; 200 requests)"
        in caplog.text
    )
    assert "SLACK_BOT_TOKEN" in caplog.text


def test_nothing_is_posted_without_breaches(slack_server):
    done = analysis.post_rate_alert(
        [],
        day="2026-11-20",
        token=slack_server.token,
        channel=slack_server.channel,
        api_url=slack_server.base_url,
    )
    assert done == {"posted": False, "reason": "no breaches", "breaches": 0}
    assert slack_server.messages == []


def test_alert_posts_to_slack_and_raises_when_slack_refuses(slack_server):
    done = analysis.post_rate_alert(
        [BREACH.as_dict()],
        day="2026-11-20",
        token=slack_server.token,
        channel=slack_server.channel,
        api_url=slack_server.base_url,
        warehouse="duckdb:///w.duckdb",
    )
    assert done["posted"] is True and done["ts"]
    [msg] = slack_server.messages
    assert msg["text"].startswith(":rotating_light: mailpulse: 1 rate alert(s) for 2026-11-20")
    assert "from delivery_outcomes in duckdb:///w.duckdb" in msg["text"]
    # a wrong token: Slack answers ok=false; the task must fail (and be retried)
    with pytest.raises(analysis.AlertNotPosted, match="invalid_auth|token"):
        analysis.post_rate_alert(
            [BREACH.as_dict()],
            day="2026-11-20",
            token="xoxb-wrong",
            channel=slack_server.channel,
            api_url=slack_server.base_url,
        )
    with pytest.raises(ConfigurationError, match="no channel"):
        analysis.post_rate_alert(
            [BREACH.as_dict()],
            day="2026-11-20",
            token=slack_server.token,
            channel=None,
            api_url=slack_server.base_url,
        )


def test_jsonable_makes_xcom_safe_values():
    value = {
        "d": date(2026, 11, 20),
        "n": float("nan"),
        "t": (1, 2),
        "df": pd.DataFrame({"a": [1]}),
        "b": BREACH,
    }
    assert analysis.jsonable(value) == {
        "d": "2026-11-20",
        "n": None,
        "t": [1, 2],
        "df": [{"a": 1}],
        "b": BREACH.as_dict(),
    }


def test_warehouse_uri_prefers_the_environment(tmp_path):
    assert analysis.warehouse_uri({"MAILPULSE_WAREHOUSE": "bigquery://p/d"}) == "bigquery://p/d"
    from pipelines.config import default_warehouse_uri

    env = {"MAILPULSE_DATA_DIR": str(tmp_path)}
    assert analysis.warehouse_uri(env) == default_warehouse_uri(env)
    assert analysis.warehouse_uri(env).endswith(f"{tmp_path}/warehouse.duckdb")


# -- alerts against each category's own baseline ----------------------------------------


def synthetic_series(days: int = 42, spike: dict | None = None, seed: int = 7):
    """delivery_outcomes-like rows over ``days`` days for three categories with their own
    normal behaviour: "steady" bounces ~1 % of 2,000, "high" ~6 % of 1,500 (a list that
    always bounces a lot), "complainy" 0.35 % spam reports of 5,000. ``spike``:
    {(category, day index): (bounces, spam_reports)}."""
    import random

    rng = random.Random(seed)
    start = date(2026, 10, 1)
    rows = []
    for i in range(days):
        d = (start + timedelta(days=i)).isoformat()
        for cat, req, bounce, spam in (
            ("steady", 2000, 0.01, 0.0005),
            ("high", 1500, 0.06, 0.0008),
            ("complainy", 5000, 0.004, 0.0035),
        ):
            r = int(req * rng.uniform(0.85, 1.15))
            b = sum(rng.random() < bounce for _ in range(r))
            delivered = r - b
            sp = sum(rng.random() < spam for _ in range(delivered))
            if spike and (cat, i) in spike:
                b, sp = spike[(cat, i)]
                delivered = r - b
            rows.append((d, cat, "sendgrid", r, r, delivered, b, 0, sp, 0))
    return analysis.category_daily(outcomes(*rows)), start


def evaluate(daily, start, first: int, last: int, check):
    out = []
    for i in range(first, last + 1):
        out += check(daily, start + timedelta(days=i))
    return out


def test_a_normal_fortnight_is_quiet_against_the_baseline_but_not_fixed_thresholds():
    daily, start = synthetic_series()
    baseline = evaluate(daily, start, 28, 41, lambda d, day: analysis.baseline_breaches(d, day))
    assert baseline == []
    fixed = evaluate(
        daily,
        start,
        28,
        41,
        lambda d, day: analysis.find_breaches(
            d[pd.to_datetime(d.event_date).dt.date == day], Thresholds()
        ),
    )
    # the fixed thresholds cry wolf on the categories whose normal is above them
    assert len(fixed) >= 14
    assert {b.category for b in fixed} >= {"high", "complainy"}


def test_a_spike_stands_out_on_its_day_only():
    # day 35: "steady" bounces 4 % (normal 1 %, below the fixed 5 %); "high" reports spam
    # at 0.85 % (normal 0.08 %)
    daily, start = synthetic_series(spike={("steady", 35): (80, 1), ("high", 35): (90, 12)})
    found = evaluate(daily, start, 28, 41, lambda d, day: analysis.baseline_breaches(d, day))
    assert [(b.event_date, b.category, b.metric) for b in found] == [
        ("2026-11-05", "high", "spam_report_rate"),
        ("2026-11-05", "steady", "bounce_rate"),
    ]
    steady = [b for b in found if b.category == "steady"][0]
    assert steady.numerator == 80 and 0.01 < steady.threshold < 0.04
    # the fixed thresholds miss the "steady" spike (4 % < 5 %)
    day35 = start + timedelta(days=35)
    fixed = analysis.find_breaches(
        daily[pd.to_datetime(daily.event_date).dt.date == day35], Thresholds()
    )
    assert ("steady", "bounce_rate") not in [(b.category, b.metric) for b in fixed]


def test_without_enough_history_the_fixed_thresholds_apply_and_volume_counts():
    daily, start = synthetic_series(days=5, spike={("steady", 4): (150, 0)})
    day = start + timedelta(days=4)
    found = analysis.baseline_breaches(daily, day)
    # 5 days of history < 7: "high" (6 %) breaches the fixed 5 %, the steady spike (7.5 %) too
    assert {(b.category, b.metric, b.threshold) for b in found} >= {
        ("high", "bounce_rate", 0.05),
        ("steady", "bounce_rate", 0.05),
    }
    # below the minimum volume nothing is checked
    assert analysis.baseline_breaches(daily, day, analysis.Baseline(min_volume=10_000)) == []
    with pytest.raises(ConfigurationError, match="spread"):
        analysis.Baseline(spread=0)


def test_baseline_alerts_from_the_warehouse(tmp_path, hasher):
    """baseline_rate_breaches reads the day and its 28 days from delivery_outcomes."""
    from pipelines.warehouse.duckdb import DuckDBWarehouse

    daily, start = synthetic_series(spike={("steady", 35): (80, 1)})
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    wh.ensure_schema()
    table = daily.assign(provider="sendgrid", event_date=pd.to_datetime(daily.event_date).dt.date)
    cols = [
        "event_date",
        "category",
        "provider",
        "requests",
        "delivered",
        "bounces",
        "blocks",
        "spam_reports",
        "unique_opens",
    ]
    import duckdb

    con = duckdb.connect(wh.path)
    frame = table[cols]  # noqa: F841 (read by DuckDB below)
    con.execute("CREATE TABLE delivery_outcomes AS SELECT * FROM frame")
    con.close()
    day = start + timedelta(days=35)
    found = analysis.baseline_rate_breaches(wh, day)
    assert [(b.category, b.metric) for b in found] == [("steady", "bounce_rate")]
    assert analysis.baseline_rate_breaches(wh, day + timedelta(days=1)) == []
