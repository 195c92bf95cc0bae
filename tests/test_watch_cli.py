"""``mailpulse watch`` as a shell script runs it (a subprocess), against a real DuckDB
file and the local Slack-compatible server."""

from __future__ import annotations

import csv
import io
import json

import pytest
from watch_support import EventFactory, load_events

from pipelines.warehouse.duckdb import DuckDBWarehouse

CAT = "weekly-digest"
EMAILS = ["Ann@Example.com", "bob@example.org", "cho@example.net"]
SINCE = "2026-11-23T10:00:00Z"
NO_SLACK = {"SLACK_BOT_TOKEN": "", "MAILPULSE_SLACK_CHANNEL": "", "MAILPULSE_SLACK_API_URL": ""}


@pytest.fixture
def setup(tmp_path, hasher):
    wh = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    ev = EventFactory(hasher, CAT)
    load_events(
        wh,
        [
            ev(EMAILS[0], "delivered", 5),
            ev(EMAILS[1], "bounce", 5, bounce_class="hard", reason="550 unknown user"),
        ],
        tmp_path,
    )
    emails = tmp_path / "emails.txt"
    emails.write_text("# recipients of the weekly digest\n" + "\n".join(EMAILS) + "\n\n")
    return wh, emails, ev


def test_settled_prints_json_and_exits_0(cli, setup, tmp_path):
    wh, emails, ev = setup
    load_events(wh, [ev(EMAILS[2], "dropped", 5, reason="Invalid")], tmp_path)
    p = cli(
        "watch",
        "--category",
        CAT,
        "--since",
        SINCE,
        "--emails",
        emails,
        "--warehouse",
        wh.uri,
        "--json",
        env=NO_SLACK,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["counts"] == {
        "delivered": 1,
        "bounce": 1,
        "dropped": 1,
        "deferred": 0,
        "unsettled": 0,
    }
    assert out["state"] == "settled" and out["recipients"] == 3
    assert [b["email"] for b in out["bounced"]] == ["bob@example.org"]


def test_timeout_exits_3_and_prints_what_is_known(cli, setup):
    wh, emails, _ = setup
    p = cli(
        "watch",
        "--category",
        CAT,
        "--since",
        SINCE,
        "--emails",
        emails,
        "--warehouse",
        wh.uri,
        "--timeout",
        "0",
        env=NO_SLACK,
    )
    assert p.returncode == 3, p.stderr
    assert "timed out" in p.stdout and "delivered   1 (33.3%)" in p.stdout
    assert "unsettled   1 (33.3%)  (never seen 1" in p.stdout


def test_posts_to_slack_from_the_environment(cli, setup, slack_server):
    wh, emails, _ = setup
    p = cli(
        "watch",
        "--category",
        CAT,
        "--since",
        SINCE,
        "--emails",
        emails,
        "--warehouse",
        wh.uri,
        "--timeout",
        "0",
        env=slack_server.env(),
    )
    assert p.returncode == 3, p.stderr
    assert "posted to Slack" in p.stdout
    (msg,) = slack_server.messages
    assert "timed out" in str(msg["blocks"])
    (f,) = slack_server.completed_files()
    assert f["thread_ts"] == msg["ts"]
    rows = list(csv.DictReader(io.StringIO(f["content"].decode())))
    assert [r["email"] for r in rows] == ["bob@example.org"]


def test_no_notify_and_a_csv_list(cli, setup, slack_server, tmp_path):
    wh, _, _ = setup
    listing = tmp_path / "list.csv"
    listing.write_text("name,email\nAnn,Ann@Example.com\nBob,bob@example.org\n")
    p = cli(
        "watch",
        "--category",
        CAT,
        "--since",
        SINCE,
        "--emails",
        listing,
        "--warehouse",
        wh.uri,
        "--no-notify",
        "--json",
        env=slack_server.env(),
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["recipients"] == 2
    assert slack_server.requests == []


def _main(*args):
    """In process (fast): ``pipelines.cli.main`` returns the exit code, argparse exits 2."""
    from pipelines.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(
    "args,message",
    [
        (["--emails", "/nonexistent/list.txt"], "cannot read --emails /nonexistent/list.txt"),
        (["--since", "last tuesday"], "is not a timestamp; use ISO 8601"),
        (["--timeout", "-5"], "--timeout must be 0 or more"),
    ],
)
def test_usage_errors_exit_2_and_say_what_to_do(setup, args, message, capsys, monkeypatch):
    wh, emails, _ = setup
    for k, v in NO_SLACK.items():
        monkeypatch.setenv(k, v)
    base = {"--category": CAT, "--since": SINCE, "--emails": str(emails), "--warehouse": wh.uri}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    assert _main("watch", *[x for kv in base.items() for x in kv]) == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_warehouse_and_half_configured_slack_are_usage_errors(
    setup, tmp_path, capsys, monkeypatch
):
    # (a warehouse that does not exist yet is waited for: see the test below)
    _, emails, _ = setup
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"not a DuckDB file" * 100)
    assert (
        _main(
            "watch",
            "--category",
            CAT,
            "--since",
            SINCE,
            "--emails",
            emails,
            "--warehouse",
            f"duckdb://{garbage}",
            "--no-notify",
        )
        == 2
    )
    assert "cannot open" in capsys.readouterr().err
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("MAILPULSE_SLACK_CHANNEL", "")
    assert _main("watch", "--category", CAT, "--since", SINCE, "--emails", emails) == 2
    assert "MAILPULSE_SLACK_CHANNEL" in capsys.readouterr().err


def test_reading_the_list(tmp_path):
    from pipelines.commands.watch import read_addresses

    f = tmp_path / "l.txt"
    f.write_text("email\n a@x.example \n\n# comment\nb@x.example\n")
    assert read_addresses(str(f)) == ["a@x.example", "b@x.example"]
    f.write_text("id,Email\n1,a@x.example\n2,\n")
    assert read_addresses(str(f)) == ["a@x.example"]
    # a list `mailpulse suppressions --out` wrote from a TSV / ;-separated list
    f.write_text("e-mail\tname\nA@x.example\tAnn\nb@x.example\tBob\n")
    assert read_addresses(str(f)) == ["A@x.example", "b@x.example"]
    f.write_text("name;email_address\nAnn;a@x.example\n")
    assert read_addresses(str(f)) == ["a@x.example"]
    f.write_text("id,name\n1,a\n")
    from pipelines.cli import UsageError

    with pytest.raises(UsageError, match="no 'email' column"):
        read_addresses(str(f))


def test_a_misspelled_category_is_named_on_stderr_within_seconds(setup, tmp_path):
    """The hint is logged at the first poll (seconds), long before the timeout, and the
    final summary and JSON carry it too."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from conftest import ROOT

    wh, emails, _ = setup
    env = {
        **os.environ,
        **NO_SLACK,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "watch",
            "--category",
            "weekly-digset",
            "--since",
            SINCE,
            "--emails",
            str(emails),
            "--warehouse",
            wh.uri,
            "--timeout",
            "20",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seen: list[tuple[float, str]] = []

    def read():
        for line in proc.stderr:
            seen.append((time.monotonic() - t0, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out = proc.stdout.read()  # stderr is the reader's alone
    proc.wait(timeout=90)
    ended = time.monotonic() - t0
    reader.join(5)
    assert proc.returncode == 3
    hints = [(t, ln) for t, ln in seen if "no event in category 'weekly-digset'" in ln]
    assert len(hints) == 1, seen
    t, line = hints[0]
    # at the first poll, not at the timeout (20 s): whatever the start-up time of the
    # process on a busy machine, the hint comes at least 15 s before the watch ends
    assert ended - t >= 15, f"hint at {t:.1f}s, watch ended at {ended:.1f}s"
    assert "'weekly-digest' (2)" in line and "check the category name" in line
    result = json.loads(out)
    assert result["other_categories"] == {"weekly-digest": 2}
    assert result["hint"] in line


def test_a_warehouse_not_created_yet_waits_and_says_so(cli, tmp_path):
    emails = tmp_path / "emails.txt"
    emails.write_text("\n".join(EMAILS) + "\n")
    missing = tmp_path / "not-yet" / "warehouse.duckdb"
    p = cli(
        "watch",
        "--category",
        CAT,
        "--since",
        SINCE,
        "--emails",
        emails,
        "--warehouse",
        f"duckdb://{missing}",
        "--timeout",
        "0",
        env=NO_SLACK,
    )
    assert p.returncode == 3, p.stderr  # timed out (nothing seen), not an error
    assert "nothing loaded so far" in p.stderr and "load --follow" in p.stderr
    assert "note: no events in" in p.stdout and "unsettled   3 (100.0%)" in p.stdout
    assert not missing.exists()
