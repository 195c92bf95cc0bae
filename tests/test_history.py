"""`mailpulse history` says whether the address is suppressed (issue 16), from the
``suppressions`` derived table via pipelines.suppress.clean_list, against a real DuckDB
file and a real `mailpulse` subprocess; the address itself never reaches the warehouse."""

from __future__ import annotations

import json
from datetime import date

from test_outcomes import ALICE, RecordingWarehouse, loaded, main  # noqa: F401 (fixtures)

from pipelines.outcomes import compute_outcomes

BOB = "bob@example.org"


def history(cli, wh, email, *extra):
    return cli(
        "history",
        "--email",
        email,
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--warehouse",
        wh.uri,
        *extra,
    )


def test_history_shows_the_suppression_and_its_reason(loaded, cli, hasher):
    compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    # what the suppressions table holds for Alice (her SES mail hard-bounced)
    expect = loaded.query(
        "SELECT reason, first_seen FROM suppressions WHERE email_hash = @h",
        {"h": hasher.hash(ALICE)},
    ).to_pylist()
    assert [r["reason"] for r in expect] == ["hard_bounce"]

    res = history(cli, loaded, "  alice.smith@EXAMPLE.com ", "--format", "json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)["suppression"]
    assert s["suppressed"] is True and s["reason"] == "hard_bounce"
    assert s["reasons"] == ["hard_bounce"] and s["description"] == "hard bounce"
    assert s["first_seen"].startswith("2026-11-21T09:00:02")
    assert s["through"] == "2026-11-21"
    assert "alice" not in res.stdout.lower()

    res = history(cli, loaded, ALICE)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("suppression:"))
    assert line.startswith(
        "suppression: SUPPRESSED, do not mail: hard bounce since 2026-11-21T09:00:02"
    )
    assert "suppressions computed through 2026-11-21" in line

    res = history(cli, loaded, BOB, "--format", "json")
    assert json.loads(res.stdout)["suppression"]["suppressed"] is False
    res = history(cli, loaded, BOB)
    assert "suppression: not suppressed (suppressions computed through 2026-11-21)" in res.stdout


def test_suppression_is_shown_whatever_the_history_window(loaded, main):
    compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    res = main(
        "history",
        "--email",
        ALICE,
        "--since",
        "2026-11-25",
        "--until",
        "2026-11-30",
        "--warehouse",
        loaded.uri,
    )
    assert res.returncode == 0, res.stderr
    assert "0 events" in res.stdout
    assert "suppression: SUPPRESSED, do not mail: hard bounce" in res.stdout


def test_without_the_suppressions_table_history_says_how_to_get_it(loaded, main):
    res = main(
        "history",
        "--email",
        ALICE,
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--warehouse",
        loaded.uri,
        "--format",
        "json",
    )
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)["suppression"]
    assert s["suppressed"] is None and "mailpulse outcomes" in s["note"]
    res = main(
        "history",
        "--email",
        ALICE,
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--warehouse",
        loaded.uri,
    )
    assert "suppression: unknown (no suppressions table" in res.stdout
    assert "6 events, 2 messages" in res.stdout  # the history itself is unchanged


def test_the_suppression_lookup_sends_only_the_hash(loaded, hasher, capsys):
    from pipelines.cli import build_parser

    compute_outcomes(loaded, date(2026, 11, 20), date(2026, 11, 21))
    wh = RecordingWarehouse(loaded.path)
    args = build_parser().parse_args(
        [
            "history",
            "--email",
            ALICE,
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-30",
            "--format",
            "json",
        ]
    )
    args.warehouse = wh
    assert args._run(args) == 0
    assert json.loads(capsys.readouterr().out)["suppression"]["suppressed"] is True
    assert any("FROM suppressions" in sql for sql, _ in wh.sent)
    assert any(hasher.hash(ALICE) in (p.get("hashes") or []) for _, p in wh.sent)
    sent = json.dumps([(sql, params) for sql, params in wh.sent], default=str).lower()
    assert "alice" not in sent and "example.com" not in sent
