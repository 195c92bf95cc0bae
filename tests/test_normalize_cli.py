"""``mailpulse normalize`` as a user runs it (a subprocess through the ``cli`` fixture)."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
from conftest import SAMPLES, TEST_HASH_KEY

from pipelines.events import FIELD_NAMES

SG = Path(__file__).resolve().parent / "payloads" / "sendgrid"
CMC = SAMPLES / "cmc"
RFC3339_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$"


def h(address: str) -> str:
    return hmac.new(TEST_HASH_KEY.encode(), address.encode(), hashlib.sha256).hexdigest()


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def letters(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_prints_canonical_events_one_per_line(cli):
    p = cli("normalize", SG / "click.json", CMC / "bounces_user_unknown.json")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    click, bounce = events(p.stdout)
    assert list(click) == list(FIELD_NAMES)
    assert click["event_ts"] == "2009-08-11T00:00:00Z"
    assert click["event_date"] == "2009-08-11"
    assert click["categories"] == ["category1", "category2"]
    assert click["email_hash"] == h("email@example.com")
    assert click["source_uri"] == str(SG / "click.json")
    assert bounce["event_ts"] == "2023-01-25T05:06:07Z"  # 14:06:07 Japan time
    assert bounce["categories"] == [] and bounce["bounce_class"] == "hard"
    assert all(re.match(RFC3339_Z, e["event_ts"]) for e in (click, bounce))


def test_milliseconds_keep_their_fraction_in_rfc3339(cli):
    p = cli("normalize", SG / "singlesend_open_ms.json")
    assert p.returncode == 0
    assert events(p.stdout)[0]["event_ts"] == "2020-06-09T18:19:12.372000Z"


def test_dead_letters_go_to_stderr_and_exit_3(cli, tmp_path):
    f = tmp_path / "mixed.ndjson"
    good = json.dumps(json.loads((SG / "delivered.json").read_text()))
    f.write_text(
        "\n".join(
            [
                good,
                "{not json",
                json.dumps({"what": "ever"}),
                json.dumps([{"event": "open", "email": "sam@example.org"}]),
            ]
        )
        + "\n"
    )
    p = cli("normalize", f)
    assert p.returncode == 3
    assert [e["event_type"] for e in events(p.stdout)] == ["delivered"]
    got = letters(p.stderr)
    assert [(d["source"], d["line"], d["record_index"]) for d in got] == [
        (str(f), 2, 0),
        (str(f), 3, 0),
        (str(f), 4, 0),
    ]
    assert got[0]["reason"].startswith("not JSON")
    assert (
        got[1]["reason"]
        == "unknown record shape (not SendGrid, SES or CMC): object with keys [what]"
    )
    assert got[2]["reason"] == "'open' event: missing timestamp"
    assert got[2]["provider"] == "sendgrid"
    assert got[0]["raw"] == "{not json"


def test_gzip_input(cli, tmp_path):
    f = tmp_path / "batch.json.gz"
    f.write_bytes(gzip.compress((SG / "batch_without_event_ids.json").read_bytes()))
    p = cli("normalize", f)
    assert p.returncode == 0, p.stderr
    assert [e["event_type"] for e in events(p.stdout)] == ["processed", "dropped", "delivered"]


def test_gzip_detected_by_content_not_name(cli, tmp_path):
    f = tmp_path / "looks-plain.json"
    f.write_bytes(gzip.compress((SG / "open.json").read_bytes()))
    p = cli("normalize", f)
    assert p.returncode == 0 and [e["event_type"] for e in events(p.stdout)] == ["open"]


def test_truncated_gzip_is_a_dead_letter_not_silence(cli, tmp_path):
    lines = [
        json.dumps(
            dict(
                json.loads((SG / "open.json").read_text())[0],
                sg_event_id=f"id-{i}",
                ip=f"10.0.{i % 250}.{i % 7}",
            )
        )
        for i in range(2000)
    ]
    gz = gzip.compress("\n".join(lines).encode() + b"\n")
    f = tmp_path / "cut.json.gz"
    f.write_bytes(gz[: len(gz) * 2 // 3])
    p = cli("normalize", f)
    assert p.returncode == 3
    assert 0 < len(events(p.stdout)) < 2000
    reasons = [d["reason"] for d in letters(p.stderr)]
    assert any(r.startswith("gzip stream truncated") for r in reasons), reasons


def test_pretty_printed_single_document(cli):
    # The provider-samples bodies are pretty-printed over many lines.
    p = cli("normalize", CMC / "deliveries_queued.json")
    assert p.returncode == 0 and len(events(p.stdout)) == 1


def test_ndjson_of_post_bodies(cli, tmp_path):
    f = tmp_path / "posts.ndjson"
    names = ["processed.json", "delivered.json", "open.json", "account_status_change.json"]
    f.write_text("\n".join(json.dumps(json.loads((SG / n).read_text())) for n in names) + "\n")
    p = cli("normalize", f)
    assert p.returncode == 0, p.stderr
    assert [e["event_type"] for e in events(p.stdout)] == ["processed", "delivered", "open"]


def test_several_concatenated_pretty_printed_documents(cli, tmp_path):
    f = tmp_path / "saved-bodies.json"
    f.write_text(
        (CMC / "deliveries_queued.json").read_text()
        + "\n"
        + (CMC / "deliveries_succeeded.json").read_text()
        + (SG / "bounce_blocked.json").read_text()
    )
    p = cli("normalize", f)
    assert p.returncode == 0, p.stderr
    assert [(e["provider"], e["event_type"]) for e in events(p.stdout)] == [
        ("cmc", "processed"),
        ("cmc", "delivered"),
        ("sendgrid", "bounce"),
    ]


def test_forced_wrong_provider_is_a_dead_letter(cli):
    p = cli("normalize", "--provider", "cmc", SG / "delivered.json")
    assert p.returncode == 3 and p.stdout == ""
    (dl,) = letters(p.stderr)
    assert (dl["reason"], dl["provider"], dl["line"]) == ("not a cmc record: array of 1", "cmc", 1)


def test_forced_right_provider(cli):
    p = cli("normalize", "--provider", "sendgrid", SG / "delivered.json")
    assert p.returncode == 0 and len(events(p.stdout)) == 1


def test_stdin(cli):
    p = cli("normalize", "-", input=(SG / "dropped.json").read_text())
    assert p.returncode == 0, p.stderr
    (ev,) = events(p.stdout)
    assert ev["source_uri"] == "<stdin>" and ev["reason"] == "Bounced Address"


def test_cmc_options(cli):
    p = cli(
        "normalize",
        "--cmc-timezone",
        "UTC",
        "--cmc-category-field",
        "subject",
        CMC / "deliveries_queued.json",
    )
    assert p.returncode == 0, p.stderr
    (ev,) = events(p.stdout)
    assert ev["event_ts"] == "2023-01-25T14:03:06Z"
    assert ev["categories"] == ["メールマガジンのテスト"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--provider", "mailgun", "x.json"], "invalid choice: 'mailgun'"),
        ([], "the following arguments are required: PATH"),
        (["--cmc-timezone", "Mars/Olympus", "-"], "is not a known time zone"),
    ],
)
def test_usage_errors_exit_2(cli, args, message):
    p = cli("normalize", *args, input="")
    assert p.returncode == 2
    assert message in p.stderr and p.stdout == ""


def test_missing_file_exits_2_before_any_output(cli, tmp_path):
    p = cli("normalize", SG / "open.json", tmp_path / "nope.json")
    assert p.returncode == 2 and p.stdout == ""
    assert "nope.json does not exist" in p.stderr and "pass payload files" in p.stderr
    p = cli("normalize", tmp_path)
    assert p.returncode == 2 and "is a directory" in p.stderr


def test_the_key_and_plain_addresses_never_appear(cli, tmp_path):
    addr = "Secret.Person@example.com"
    key = "k3y-that-must-not-leak-0042"
    f = tmp_path / "leaky.ndjson"
    items = [
        {
            "event": "bounce",
            "email": addr,
            "timestamp": 1513299569,
            "sg_event_id": "a",
            "reason": f"550 5.1.1 <{addr.lower()}>: Recipient address rejected",
            "type": "bounce",
        },
        {
            "event": "click",
            "email": addr,
            "timestamp": 1513299569,
            "sg_event_id": "b",
            "url": f"https://shop.example/unsub?e={addr}",
        },
        {"event": "open", "email": addr, "timestamp": "never"},  # a dead letter quoting it
    ]
    cmc = json.loads((CMC / "bounces_user_unknown.json").read_text())
    cmc["event"]["bounces"][0]["to"] = addr
    cmc["event"]["bounces"][0]["reason"] = f"550 <{addr}> unknown user"
    f.write_text(json.dumps(items) + "\n" + json.dumps(cmc) + "\n" + f"{{broken {addr}\n")
    p = cli("normalize", f, env={"MAILPULSE_HASH_KEY": key})
    assert p.returncode == 3
    assert len(events(p.stdout)) == 3 and len(letters(p.stderr)) == 2
    for stream in (p.stdout, p.stderr):
        assert key not in stream
        assert addr not in stream and addr.lower() not in stream
        assert "secret.person" not in stream.lower()
    expect = hmac.new(key.encode(), addr.lower().encode(), hashlib.sha256).hexdigest()
    assert {e["email_hash"] for e in events(p.stdout)} == {expect}


def test_without_a_key_the_development_key_warns_once(cli, tmp_path):
    p = cli("normalize", SG / "open.json", SG / "click.json", env={"MAILPULSE_HASH_KEY": ""})
    assert p.returncode == 0
    warnings = [ln for ln in p.stderr.splitlines() if "MAILPULSE_HASH_KEY" in ln]
    assert len(warnings) == 1 and "development key" in warnings[0]
