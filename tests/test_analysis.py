"""pipelines.analysis: rates recomputed from sums, thresholds with a minimum volume, the
alert text and where it goes (no Slack token: logged; Slack: the local server)."""
from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pytest

from pipelines import analysis
from pipelines.analysis import Breach, ConfigurationError, Thresholds


def outcomes(*rows):
    cols = ("event_date", "category", "provider", "requests", "processed", "delivered",
            "bounces", "blocks", "spam_reports", "unique_opens")
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_category_daily_sums_providers_and_recomputes_rates():
    df = outcomes(("2026-11-20", "promo", "sendgrid", 100, 100, 90, 10, 0, 0, 9),
                  ("2026-11-20", "promo", "ses", 300, 300, 290, 2, 8, 3, 29),
                  ("2026-11-20", "empty", "ses", 0, 0, 0, 0, 0, 0, 0))
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
    daily = analysis.category_daily(outcomes(
        ("2026-11-20", "big-bouncer", "sendgrid", 200, 200, 180, 11, 9, 0, 0),  # 5.5 %
        ("2026-11-20", "at-limit", "sendgrid", 200, 200, 190, 10, 0, 0, 0),      # 5.0 %: not above
        ("2026-11-20", "small", "sendgrid", 99, 99, 50, 49, 0, 0, 0),            # below volume
        ("2026-11-20", "complaints", "sendgrid", 1000, 1000, 1000, 0, 0, 4, 0),  # 0.4 %
    ))
    found = analysis.find_breaches(daily, Thresholds(bounce_rate=0.05, spam_report_rate=0.003,
                                                     min_volume=100))
    assert [(b.category, b.metric, b.numerator, b.denominator) for b in found] == [
        ("big-bouncer", "bounce_rate", 11, 200), ("complaints", "spam_report_rate", 4, 1000)]
    # a volume of 99 alerts once the minimum is lowered
    lower = analysis.find_breaches(daily, Thresholds(min_volume=99))
    assert ("small", "bounce_rate") in [(b.category, b.metric) for b in lower]


@pytest.mark.parametrize("kwargs", [{"bounce_rate": 1.5}, {"spam_report_rate": -0.1},
                                    {"min_volume": -1}, {"bounce_rate": "0.05"}])
def test_thresholds_reject_values_that_cannot_work(kwargs):
    with pytest.raises(ConfigurationError, match="must be"):
        Thresholds(**kwargs)


BREACH = Breach("2026-11-20", "promo", "bounce_rate", 0.08, 0.05, 16, 200, 200)


def test_alert_without_token_is_logged_not_posted(caplog):
    caplog.set_level(logging.WARNING, logger="pipelines.analysis")
    done = analysis.post_rate_alert([BREACH.as_dict()], day="2026-11-20", token=None,
                                    channel=None)
    assert done["posted"] is False and done["reason"] == "no Slack token"
    assert "*promo*: bounce rate (bounces / requests) 8.00% > 5.00% (16 of 200; 200 requests)" \
        in caplog.text
    assert "SLACK_BOT_TOKEN" in caplog.text


def test_nothing_is_posted_without_breaches(slack_server):
    done = analysis.post_rate_alert([], day="2026-11-20", token=slack_server.token,
                                    channel=slack_server.channel, api_url=slack_server.base_url)
    assert done == {"posted": False, "reason": "no breaches", "breaches": 0}
    assert slack_server.messages == []


def test_alert_posts_to_slack_and_raises_when_slack_refuses(slack_server):
    done = analysis.post_rate_alert([BREACH.as_dict()], day="2026-11-20",
                                    token=slack_server.token, channel=slack_server.channel,
                                    api_url=slack_server.base_url, warehouse="duckdb:///w.duckdb")
    assert done["posted"] is True and done["ts"]
    [msg] = slack_server.messages
    assert msg["text"].startswith(":rotating_light: mailpulse: 1 rate alert(s) for 2026-11-20")
    assert "from delivery_outcomes in duckdb:///w.duckdb" in msg["text"]
    # a wrong token: Slack answers ok=false; the task must fail (and be retried)
    with pytest.raises(analysis.AlertNotPosted, match="invalid_auth|token"):
        analysis.post_rate_alert([BREACH.as_dict()], day="2026-11-20", token="xoxb-wrong",
                                 channel=slack_server.channel, api_url=slack_server.base_url)
    with pytest.raises(ConfigurationError, match="no channel"):
        analysis.post_rate_alert([BREACH.as_dict()], day="2026-11-20", token=slack_server.token,
                                 channel=None, api_url=slack_server.base_url)


def test_jsonable_makes_xcom_safe_values():
    value = {"d": date(2026, 11, 20), "n": float("nan"), "t": (1, 2),
             "df": pd.DataFrame({"a": [1]}), "b": BREACH}
    assert analysis.jsonable(value) == {"d": "2026-11-20", "n": None, "t": [1, 2],
                                        "df": [{"a": 1}], "b": BREACH.as_dict()}


def test_warehouse_uri_prefers_the_environment(tmp_path):
    assert analysis.warehouse_uri({"MAILPULSE_WAREHOUSE": "bigquery://p/d"}) == "bigquery://p/d"
    from pipelines.config import default_warehouse_uri
    env = {"MAILPULSE_DATA_DIR": str(tmp_path)}
    assert analysis.warehouse_uri(env) == default_warehouse_uri(env)
    assert analysis.warehouse_uri(env).endswith(f"{tmp_path}/warehouse.duckdb")
