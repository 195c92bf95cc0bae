"""The mailbox-provider mapping (pipelines/mailbox.py, pipelines/data/mailbox_providers.csv)
and `mailpulse outcomes --by day|category|provider|mailbox`."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from pipelines.mailbox import (
    MAPPING_CSV,
    OTHER,
    UNKNOWN,
    MappingError,
    mailbox_provider,
    read_mapping,
)
from pipelines.synth import DOMAIN_PROFILES


@pytest.mark.parametrize(
    "domain, want",
    [
        ("gmail.com", "Gmail"),
        ("googlemail.com", "Gmail"),
        ("outlook.com", "Microsoft"),
        ("hotmail.com", "Microsoft"),
        ("live.com", "Microsoft"),
        ("msn.com", "Microsoft"),
        ("hotmail.co.jp", "Microsoft"),
        ("outlook.jp", "Microsoft"),
        ("yahoo.com", "Yahoo"),
        ("aol.com", "Yahoo"),
        ("yahoo.co.jp", "Yahoo! JAPAN"),
        ("ymail.ne.jp", "Yahoo! JAPAN"),  # not Yahoo
        ("icloud.com", "Apple"),
        ("me.com", "Apple"),
        ("mac.com", "Apple"),
        ("docomo.ne.jp", "docomo"),
        ("ezweb.ne.jp", "au"),
        ("au.com", "au"),
        ("biz.ezweb.ne.jp", "au"),
        ("biz.au.com", "au"),
        ("softbank.ne.jp", "SoftBank"),
        ("i.softbank.jp", "SoftBank"),
        ("d.vodafone.ne.jp", "SoftBank"),
    ],
)
def test_families(domain, want):
    assert mailbox_provider(domain) == want


@pytest.mark.parametrize(
    "value, want",
    [
        ("GMail.COM", "Gmail"),
        (" docomo.ne.jp. ", "docomo"),
        ("someone@Me.com", "Apple"),
        ("softbank.jp", OTHER),  # only i.softbank.jp is listed, not its parent
        ("mygmail.com", OTHER),  # a suffix of labels, not of characters
        ("com", OTHER),
        ("jp", OTHER),
        ("corp.example.co.jp", OTHER),
        (None, UNKNOWN),
        ("", UNKNOWN),
    ],
)
def test_lookup_rules(value, want):
    assert mailbox_provider(value) == want


def test_the_file_is_well_formed_and_every_row_names_a_documented_source():
    m = read_mapping(MAPPING_CSV)
    header = "".join(
        line
        for line in MAPPING_CSV.read_text(encoding="utf-8").splitlines(True)
        if line.startswith("#")
    )
    documented = set(re.findall(r"^#\s{3}(\w+)\s", header, re.M))
    assert {"google", "microsoft", "yahoo", "yahoojp", "apple", "carrier"} <= documented
    assert set(m.sources.values()) <= documented
    assert {
        "Gmail",
        "Microsoft",
        "Yahoo",
        "Yahoo! JAPAN",
        "Apple",
        "docomo",
        "au",
        "SoftBank",
    } <= set(m.names())


@pytest.mark.parametrize(
    "text, error",
    [
        ("domain,provider\ngmail.com,Gmail\n", "first row must be"),
        ("domain,mailbox_provider,source\ngmail.com,Gmail\n", ":2: expected"),
        (
            "domain,mailbox_provider,source\n# c\ngmail.com,Gmail,g\nGMAIL.com,Gmail,g\n",
            ":4: 'GMAIL.com' is not a lower-case domain",
        ),
        (
            "domain,mailbox_provider,source\ngmail.com,Gmail,g\ngmail.com,Google,g\n",
            ":3: gmail.com is listed twice",
        ),
    ],
)
def test_a_malformed_file_names_the_line(tmp_path, text, error):
    p = tmp_path / "m.csv"
    p.write_text(text)
    with pytest.raises(MappingError, match=re.escape(error)):
        read_mapping(p)


#: synth's domains that are no mailbox provider's: reserved example names (RFC 2606) and
#: a company domain under one.
SYNTH_NOT_A_PROVIDER = {
    "corp.example.co.jp",
    "legacy-isp.example",
    "slow-mx.example",
    "mail.example.com",
}


def test_coverage_on_the_synth_domains():
    """Every synthetic recipient domain of a real mailbox provider is mapped, to the
    provider it belongs to; only the example domains are `other`."""
    got = {d.name: mailbox_provider(d.name) for d in DOMAIN_PROFILES}
    assert {n for n, p in got.items() if p == OTHER} == SYNTH_NOT_A_PROVIDER
    assert {n: p for n, p in got.items() if p != OTHER} == {
        "gmail.com": "Gmail",
        "yahoo.co.jp": "Yahoo! JAPAN",
        "outlook.com": "Microsoft",
        "icloud.com": "Apple",
        "docomo.ne.jp": "docomo",
        "ezweb.ne.jp": "au",
    }
    weight = sum(d.weight for d in DOMAIN_PROFILES)
    mapped = sum(d.weight for d in DOMAIN_PROFILES if got[d.name] != OTHER)
    assert mapped / weight >= 0.7  # the share of synthetic recipients with a provider


# -- mailpulse outcomes --by ------------------------------------------------------------
@pytest.fixture
def loaded(tmp_path):
    """A small warehouse: a 'sale' campaign to Gmail (gmail + googlemail), docomo and a
    company domain, a 'news' mail to au, over two days and two sending providers."""
    from test_queries import event_from_json, load_events

    from pipelines.warehouse.duckdb import DuckDBWarehouse

    def send(mid, h, dom, fate, day="20", cat="sale", provider="sendgrid", **kw):
        base = dict(
            provider=provider, message_id=mid, email_hash=h, recipient_domain=dom, categories=[cat]
        )
        out = [dict(base, event_type="processed", event_ts=f"2026-11-{day}T10:00:00Z")]
        if fate:
            out.append(dict(base, event_type=fate, event_ts=f"2026-11-{day}T10:00:05Z", **kw))
        return out

    rows = (
        send("m1", "g1", "gmail.com", "delivered")
        + send("m1", "g2", "googlemail.com", "bounce", bounce_class="hard")
        + send("m1", "g3", "gmail.com", "delivered")
        + send("m1", "g4", "GMAIL.com", "delivered")
        + send("m1", "d1", "docomo.ne.jp", "bounce", bounce_class="hard")
        + send("m1", "d2", "docomo.ne.jp", "bounce", bounce_class="block")
        + send("m2", "c1", "corp.example.co.jp", "delivered", day="21", provider="ses")
        + send("m3", "a1", "au.com", "delivered", day="21", cat="news", provider="ses")
    )
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(wh, [event_from_json(r) for r in rows], tmp_path)
    return wh


def _json(cli, wh, *extra):
    res = cli(
        "outcomes",
        "--warehouse",
        wh.uri,
        "--start",
        "2026-11-20",
        "--end",
        "2026-11-21",
        "--recompute",
        "--format",
        "json",
        *extra,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_outcomes_by_mailbox(loaded, cli):
    rows = _json(cli, loaded, "--by", "mailbox")
    by = {r["mailbox_provider"]: r for r in rows}
    # most requests first, `other` last
    assert [r["mailbox_provider"] for r in rows] == ["Gmail", "docomo", "au", "other"]
    assert {
        k: (r["requests"], r["delivered"], r["bounces"], r["blocks"]) for k, r in by.items()
    } == {"Gmail": (4, 3, 1, 0), "docomo": (2, 0, 1, 1), "au": (1, 1, 0, 0), "other": (1, 1, 0, 0)}
    assert by["Gmail"]["bounce_rate"] == 0.25 and by["docomo"]["bounce_rate"] == 0.5
    assert by["Gmail"]["providers"] == "sendgrid" and by["au"]["providers"] == "ses"
    # one campaign
    sale = _json(cli, loaded, "--by", "mailbox", "--category", "sale")
    assert [(r["mailbox_provider"], r["requests"]) for r in sale] == [
        ("Gmail", 4),
        ("docomo", 2),
        ("other", 1),
    ]


def test_outcomes_by_day_provider_category(loaded, cli):
    day = _json(cli, loaded, "--by", "day")
    assert [(r["event_date"], r["requests"], r["bounces"]) for r in day] == [
        ("2026-11-20", 6, 2),
        ("2026-11-21", 2, 0),
    ]
    prov = _json(cli, loaded, "--by", "provider")
    assert [(r["provider"], r["requests"], r["delivered_rate"]) for r in prov] == [
        ("sendgrid", 6, 0.5),
        ("ses", 2, 1.0),
    ]
    cat = _json(cli, loaded, "--by", "category")
    assert [(r["category"], r["requests"]) for r in cat] == [("news", 1), ("sale", 7)]
    # without --by: the documented per (event_date, category, provider) rows, unchanged
    plain = _json(cli, loaded)
    assert {(r["event_date"], r["category"], r["provider"]) for r in plain} == {
        ("2026-11-20", "sale", "sendgrid"),
        ("2026-11-21", "sale", "ses"),
        ("2026-11-21", "news", "ses"),
    }


def test_outcomes_table_by_mailbox_has_a_bounce_column(loaded, cli):
    res = cli(
        "outcomes",
        "--warehouse",
        loaded.uri,
        "--start",
        "2026-11-20",
        "--end",
        "2026-11-21",
        "--recompute",
        "--by",
        "mailbox",
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].endswith("by mailbox provider")
    assert lines[1].split()[:2] == ["mailbox", "provider"] and "bounce %" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[3:7]}
    assert rows["Gmail"][1:6] == ["sendgrid", "4", "3", "75.0%", "25.0%"]
    assert rows["docomo"][1:6] == ["sendgrid", "2", "0", "0.0%", "50.0%"]
    # a --by value that does not exist is a usage error naming the choices
    res = cli("outcomes", "--warehouse", loaded.uri, "--by", "domain")
    assert res.returncode == 2 and "mailbox" in res.stderr


@pytest.fixture(params=["duckdb", "bigquery"])
def any_backend(request, tmp_path):
    from test_queries import BACKENDS

    return BACKENDS[request.param](tmp_path / "wh", request)


def test_breakdown_reads_both_backends(any_backend, tmp_path):
    """read_domain_outcomes + summarize_by on DuckDB and the BigQuery emulator: the same
    sums (dates, NULL domains and the mapping included)."""
    from test_queries import event_from_json, load_events

    from pipelines.breakdown import read_domain_outcomes, summarize_by
    from pipelines.outcomes import compute_outcomes

    rows = [
        dict(
            event_type="processed",
            event_ts="2026-11-20T10:00:00Z",
            message_id="m1",
            email_hash=h,
            recipient_domain=d,
            categories=["sale"],
        )
        for h, d in [("h1", "gmail.com"), ("h2", "googlemail.com"), ("h3", "au.com")]
    ]
    rows += [
        dict(
            event_type="bounce",
            bounce_class="hard",
            event_ts="2026-11-21T10:00:00Z",
            message_id="m2",
            email_hash="h4",
            recipient_domain="docomo.ne.jp",
            categories=["news"],
        ),
        dict(
            provider="ses",
            event_type="dropped",
            event_ts="2026-11-21T10:00:00Z",
            message_id="s1",
            reason="Bad content",
        ),
    ]  # no recipient
    load_events(any_backend, [event_from_json(r) for r in rows], tmp_path)
    compute_outcomes(
        any_backend,
        date(2026, 11, 20),
        date(2026, 11, 21),
        tables=("delivery_outcomes", "domain_outcomes"),
    )
    df = read_domain_outcomes(any_backend, date(2026, 11, 20), date(2026, 11, 21))
    mb = summarize_by(df, "mailbox")
    assert [
        (r["mailbox_provider"], r["requests"], r["bounces"]) for r in mb.to_dict(orient="records")
    ] == [("Gmail", 2, 0), ("au", 1, 0), ("docomo", 1, 1), ("(unknown)", 1, 0)]
    day = summarize_by(df, "day")
    assert [(str(r["event_date"]), r["requests"]) for r in day.to_dict(orient="records")] == [
        ("2026-11-20", 3),
        ("2026-11-21", 2),
    ]
    sale = read_domain_outcomes(
        any_backend, date(2026, 11, 20), date(2026, 11, 21), category="sale"
    )
    assert int(sale["requests"].sum()) == 3
