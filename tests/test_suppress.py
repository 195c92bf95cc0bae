"""Cleaning a list before sending: pipelines.suppress.clean_list and `mailpulse
suppressions --emails FILE [--out CLEAN.csv]`, against real warehouses (a DuckDB file; the
BigQuery emulator for the Python API) holding events hashed as the loads hash them."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timezone

import pytest
from conftest import TEST_HASH_KEY
from test_queries import BACKENDS, event_from_json, load_events

from pipelines.hashing import EmailHasher
from pipelines.outcomes import compute_outcomes
from pipelines.suppress import clean_list, is_address
from pipelines.warehouse import WarehouseError

HASHER = EmailHasher(TEST_HASH_KEY)
UTC = timezone.utc


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _events() -> list[dict]:
    def ev(address, event_type, when, provider="sendgrid", mid="m1", **kw):
        return event_from_json(
            dict(
                provider=provider,
                event_type=event_type,
                event_ts=when,
                message_id=mid,
                email_hash=HASHER.hash(address),
                recipient_domain=address.rsplit("@", 1)[1],
                categories=["news"],
                **kw,
            )
        )

    return [
        ev("ann@example.com", "bounce", "2026-11-20T10:00:00Z", bounce_class="hard"),
        ev("bob@docomo.ne.jp", "spamreport", "2026-11-20T11:00:00Z", provider="ses"),
        ev("carol@gmail.com", "unsubscribe", "2026-11-21T09:00:00Z"),
        # CMC error status 10 / 9, as the normalizer writes them
        ev(
            "dave@ezweb.ne.jp",
            "dropped",
            "2026-11-21T03:00:00Z",
            provider="cmc",
            provider_event_type="bounces",
            smtp_status="10",
            reason="Bounced Address: blocked address",
        ),
        ev(
            "gina@example.jp",
            "dropped",
            "2026-11-21T03:00:00Z",
            provider="cmc",
            provider_event_type="bounces",
            smtp_status="9",
            reason="Invalid Address: address format error",
        ),
        # three soft-bounced messages within 7 days
        ev("erin@yahoo.co.jp", "bounce", "2026-11-19T10:00:00Z", mid="s1", bounce_class="soft"),
        ev("erin@yahoo.co.jp", "bounce", "2026-11-20T10:00:00Z", mid="s2", bounce_class="soft"),
        ev("erin@yahoo.co.jp", "bounce", "2026-11-22T10:00:00Z", mid="s3", bounce_class="soft"),
        ev("frank@outlook.com", "delivered", "2026-11-20T10:00:00Z"),
        ev("ivan@icloud.com", "bounce", "2026-11-20T10:00:00Z", bounce_class="soft"),
        # unsubscribed, then a hard bounce on another message: both reasons
        ev("hank@au.com", "bounce", "2026-11-20T12:00:00Z", mid="m2", bounce_class="hard"),
        ev("hank@au.com", "unsubscribe", "2026-11-21T12:00:00Z"),
    ]


@pytest.fixture(params=sorted(BACKENDS))
def warehouse(request, tmp_path):
    wh = BACKENDS[request.param](tmp_path / "wh", request)
    load_events(wh, _events(), tmp_path)
    compute_outcomes(wh, date(2026, 11, 19), date(2026, 11, 22), tables=("suppressions",))
    return wh


LIST = [
    " Ann@Example.com",
    "bob@docomo.ne.jp",
    "carol@gmail.com",
    "dave@ezweb.ne.jp",
    "erin@yahoo.co.jp",
    "frank@outlook.com",
    "gina@example.jp",
    "hank@au.com",
    "ivan@icloud.com",
    "new@example.org",
    "ann@example.com",
    "not an address",
    "",
]


def test_clean_list_splits_with_reasons_and_times(warehouse):
    res = clean_list(LIST, warehouse=warehouse, hasher=HASHER, until=date(2026, 11, 30))
    assert res.keep == ["frank@outlook.com", "ivan@icloud.com", "new@example.org"]
    got = [(d.email, d.reason, d.reasons, d.first_seen, d.last_seen) for d in res.drop]
    assert got == [
        # the caller's own spelling, as given
        (
            " Ann@Example.com",
            "hard_bounce",
            ("hard_bounce",),
            ts("2026-11-20T10:00:00Z"),
            ts("2026-11-20T10:00:00Z"),
        ),
        (
            "bob@docomo.ne.jp",
            "spam_report",
            ("spam_report",),
            ts("2026-11-20T11:00:00Z"),
            ts("2026-11-20T11:00:00Z"),
        ),
        (
            "carol@gmail.com",
            "unsubscribe",
            ("unsubscribe",),
            ts("2026-11-21T09:00:00Z"),
            ts("2026-11-21T09:00:00Z"),
        ),
        (
            "dave@ezweb.ne.jp",
            "hard_bounce",
            ("hard_bounce",),
            ts("2026-11-21T03:00:00Z"),
            ts("2026-11-21T03:00:00Z"),
        ),
        (
            "erin@yahoo.co.jp",
            "soft_bounces",
            ("soft_bounces",),
            ts("2026-11-19T10:00:00Z"),
            ts("2026-11-22T10:00:00Z"),
        ),
        (
            "gina@example.jp",
            "invalid_address",
            ("invalid_address",),
            ts("2026-11-21T03:00:00Z"),
            ts("2026-11-21T03:00:00Z"),
        ),
        # most serious reason first
        (
            "hank@au.com",
            "unsubscribe",
            ("unsubscribe", "hard_bounce"),
            ts("2026-11-21T12:00:00Z"),
            ts("2026-11-21T12:00:00Z"),
        ),
        ("not an address", "malformed_address", ("malformed_address",), None, None),
    ]
    assert res.duplicates == 1  # ann@example.com again, in another spelling
    assert res.suppressions_through == date(2026, 11, 22)  # how fresh the answer is
    assert res.by_reason() == {
        "spam_report": 1,
        "unsubscribe": 2,
        "hard_bounce": 2,
        "invalid_address": 1,
        "soft_bounces": 1,
        "malformed_address": 1,
    }


def test_since_limits_the_suppressions_considered(warehouse):
    res = clean_list(
        ["ann@example.com", "carol@gmail.com"],
        warehouse=warehouse,
        hasher=HASHER,
        since=date(2026, 11, 21),
        until=date(2026, 11, 30),
    )
    assert res.keep == ["ann@example.com"] and [d.email for d in res.drop] == ["carol@gmail.com"]


def test_another_hash_key_finds_nothing(warehouse):
    res = clean_list(
        ["ann@example.com"],
        warehouse=warehouse,
        hasher=EmailHasher("another-key"),
        until=date(2026, 11, 30),
    )
    assert res.keep == ["ann@example.com"] and res.drop == []


def test_without_suppressions_the_error_names_the_fix(tmp_path):
    from pipelines.warehouse.duckdb import DuckDBWarehouse

    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    with pytest.raises(WarehouseError, match="run `mailpulse outcomes`"):
        clean_list(["a@example.com"], warehouse=wh, hasher=HASHER)
    with pytest.raises(TypeError, match="not one string"):
        clean_list("a@example.com", warehouse=wh, hasher=HASHER)


@pytest.mark.parametrize(
    "value, ok",
    [
        ("a@b.c", True),
        ("user@example", True),
        (" a@b.c ", True),
        ("a b@c.d", False),
        ("@b.c", False),
        ("a@", False),
        ("abc", False),
    ],
)
def test_is_address(value, ok):
    assert is_address(value) is ok


# -- the command ------------------------------------------------------------------------
@pytest.fixture
def duck(tmp_path):
    from pipelines.warehouse.duckdb import DuckDBWarehouse

    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    load_events(wh, _events(), tmp_path)
    compute_outcomes(wh, date(2026, 11, 19), date(2026, 11, 22), tables=("suppressions",))
    wh.close()
    return f"duckdb:///{tmp_path / 'w.duckdb'}"


def test_cli_prints_what_to_drop(duck, cli, tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("email\nann@example.com\nfrank@outlook.com\nhank@au.com\nnew@example.org\n")
    res = cli("suppressions", "--emails", f, "--warehouse", duck)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == (
        f"{f}: 4 addresses, 2 to keep, 2 to drop (1 unsubscribed, "
        "1 hard bounce); suppressions through 2026-11-22"
    )
    assert lines[2].split()[:3] == ["ann@example.com", "hard", "bounce"]
    assert "2026-11-20T10:00:00Z" in lines[2]
    assert lines[3].split()[:2] == ["hank@au.com", "unsubscribed"]
    assert len(lines) == 4


def test_cli_writes_the_clean_csv_with_its_columns(duck, cli, tmp_path):
    f = tmp_path / "campaign.csv"
    f.write_text(
        "name,Email,segment\nAnn,ann@example.com,a\nFrank,frank@outlook.com,b\n"
        "Frank again,FRANK@outlook.com,b\nNew,new@example.org,c\nDave,dave@ezweb.ne.jp,d\n"
    )
    out = tmp_path / "clean.csv"
    res = cli("suppressions", "--emails", f, "--out", out, "--warehouse", duck, "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {k: doc[k] for k in ("checked", "keep", "drop", "duplicates", "by_reason")} == {
        "checked": 5,
        "keep": 2,
        "drop": 2,
        "duplicates": 1,
        "by_reason": {"hard_bounce": 2},
    }
    assert doc["out"] == str(out) and doc["dropped_file"] == str(tmp_path / "clean.dropped.csv")
    assert out.read_text() == (
        "name,Email,segment\nFrank,frank@outlook.com,b\nNew,new@example.org,c\n"
    )
    dropped = list(csv.DictReader((tmp_path / "clean.dropped.csv").open()))
    assert [(r["email"], r["reason"], r["last_seen"]) for r in dropped] == [
        ("ann@example.com", "hard_bounce", "2026-11-20T10:00:00Z"),
        ("dave@ezweb.ne.jp", "hard_bounce", "2026-11-21T03:00:00Z"),
    ]


def test_cli_column_and_headerless_csv(duck, cli, tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("Ann;ann@example.com\nNew;new@example.org\n")  # no header: found by shape
    res = cli("suppressions", "--emails", f, "--warehouse", duck, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert [d["email"] for d in json.loads(res.stdout)["dropped"]] == ["ann@example.com"]
    g = tmp_path / "g.csv"
    g.write_text("who,work,home\nAnn,x@example.net,ann@example.com\n")
    res = cli("suppressions", "--emails", g, "--warehouse", duck)
    assert res.returncode == 2 and "--column" in res.stderr
    res = cli(
        "suppressions", "--emails", g, "--column", "home", "--warehouse", duck, "--format", "json"
    )
    assert json.loads(res.stdout)["drop"] == 1


def test_cli_errors_name_the_fix(duck, cli, tmp_path):
    res = cli("suppressions", "--emails", tmp_path / "nope.txt", "--warehouse", duck)
    assert res.returncode == 2 and "no such file" in res.stderr
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("ren\xe9@example.com\n".encode("latin-1"))
    res = cli("suppressions", "--emails", latin, "--warehouse", duck)
    assert res.returncode == 2 and "not UTF-8 text" in res.stderr
    assert "Traceback" not in res.stderr
    ok = tmp_path / "ok.txt"
    ok.write_text("a@example.com\n")
    res = cli(
        "suppressions", "--emails", ok, "--out", tmp_path / "missing" / "clean.txt",
        "--warehouse", duck,
    )  # fmt: skip
    assert res.returncode == 2 and "cannot write --out" in res.stderr, res.stderr[-800:]
    assert "Traceback" not in res.stderr
    f = tmp_path / "l.txt"
    f.write_text("a@example.com\n")
    empty = f"duckdb:///{tmp_path / 'empty.duckdb'}"
    res = cli("suppressions", "--emails", f, "--warehouse", empty)
    assert res.returncode == 2 and "mailpulse outcomes" in res.stderr
