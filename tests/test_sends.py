"""The send log (pipelines/sends.py, `mailpulse sends import FILE`) on both backends: a
real DuckDB file and the BigQuery emulator."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import SAMPLES, TEST_HASH_KEY
from test_queries import BACKENDS, load_events

from pipelines.hashing import EmailHasher
from pipelines.normalizers import normalize_bytes
from pipelines.sends import SendsError, normalize_message_id, read_sends, record_sends

HASHER = EmailHasher(TEST_HASH_KEY)
UTC = timezone.utc
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PAYLOADS = Path(__file__).resolve().parent / "payloads"


@pytest.fixture(params=sorted(BACKENDS))
def wh(request, tmp_path):
    return BACKENDS[request.param](tmp_path / "wh", request)


def test_record_and_read_back(wh):
    got = record_sends(
        [
            "ann@example.com",
            " Bob@Docomo.ne.jp ",
            {
                "email": "carol@gmail.com",
                "message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
                "provider": "sendgrid",
                "sent_at": "2026-11-23T09:00:00+09:00",
            },
            "ann@example.com",
        ],  # repeated: recorded once
        send_id="spring-1",
        category="spring-sale",
        warehouse=wh,
        hasher=HASHER,
        clock=lambda: NOW,
    )
    assert got.as_dict() == {
        "recorded": 3,
        "already_recorded": 0,
        "duplicates": 1,
        "send_ids": ["spring-1"],
    }
    rows = read_sends(wh, "spring-1").to_dict(orient="records")
    plain = [
        {k: (v.to_pydatetime() if hasattr(v, "to_pydatetime") else v) for k, v in r.items()}
        for r in rows
    ]
    by_hash = {r["email_hash"]: r for r in plain}
    assert set(by_hash) == {
        HASHER.hash(a) for a in ("ann@example.com", "bob@docomo.ne.jp", "carol@gmail.com")
    }
    carol = by_hash[HASHER.hash("carol@gmail.com")]
    assert (
        carol["message_id"],
        carol["provider"],
        carol["category"],
        carol["recipient_domain"],
        carol["sent_at"],
        carol["sent_date"],
    ) == (
        "14c5d75ce93.dfd.64b469",
        "sendgrid",
        "spring-sale",
        "gmail.com",
        datetime(2026, 11, 23, 0, 0, tzinfo=UTC),
        date(2026, 11, 23),
    )
    bob = by_hash[HASHER.hash("bob@docomo.ne.jp")]
    assert (bob["message_id"], bob["recipient_domain"], bob["sent_at"]) == (
        None,
        "docomo.ne.jp",
        NOW,
    )
    # only hashes: no stored value holds an address
    assert not any("@" in str(v) for r in plain for v in r.values())


def test_recording_again_adds_nothing_whatever_the_time(wh):
    first = record_sends(
        ["a@example.com", "b@example.com"],
        send_id="s",
        warehouse=wh,
        hasher=HASHER,
        clock=lambda: NOW,
    )
    again = record_sends(
        ["b@example.com", "c@example.com", "A@example.com"],
        send_id="s",
        warehouse=wh,
        hasher=HASHER,
        sent_at="2026-11-24T00:00:00Z",
    )
    assert (first.recorded, again.recorded, again.already_recorded) == (2, 1, 2)
    other = record_sends(["a@example.com"], send_id="s2", warehouse=wh, hasher=HASHER)
    assert other.recorded == 1  # another send to the same recipient is another row
    assert len(read_sends(wh, "s")) == 3 and len(read_sends(wh, "s2")) == 1


def test_the_log_matches_the_providers_events(wh, tmp_path, ctx):
    """Message ids recorded as the APIs return them join to the events the normalizers
    write: SendGrid's X-Message-Id, SES's MessageId, CMC's <...>; a recipient with no
    event at all is one the provider never reported."""
    sg = normalize_bytes((PAYLOADS / "sendgrid" / "delivered.json").read_bytes(), ctx).events
    cmc = normalize_bytes((SAMPLES / "cmc" / "deliveries_succeeded.json").read_bytes(), ctx).events
    load_events(wh, sg + cmc, tmp_path)
    record_sends(
        [
            {
                "email": "alex@example.com",
                "message_id": "14c5d75ce93.dfd.64b469",
                "provider": "sendgrid",
            },
            {
                "email": "user@example.jp",
                "provider": "cmc",
                "message_id": "<031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com>",
            },
            {
                "email": "never@example.com",
                "message_id": "14c5d75ce93.dfd.64b470",
                "provider": "sendgrid",
            },
        ],
        send_id="launch",
        sent_at="2017-12-15T00:59:00Z",
        warehouse=wh,
        hasher=HASHER,
    )
    rows = wh.query(
        """
        SELECT s.email_hash, COUNT(e.event_id) AS events
        FROM sends AS s
        LEFT JOIN (SELECT * FROM events WHERE event_date BETWEEN @lo AND @hi) AS e
          ON e.message_id = s.message_id AND e.email_hash = s.email_hash
        WHERE s.send_id = @send_id AND s.sent_date BETWEEN @lo AND @hi
        GROUP BY s.email_hash""",
        {"send_id": "launch", "lo": date(2017, 1, 1), "hi": date(2024, 1, 1)},
    ).to_pylist()
    assert {r["email_hash"]: r["events"] for r in rows} == {
        HASHER.hash("alex@example.com"): 1,
        HASHER.hash("user@example.jp"): 1,
        HASHER.hash("never@example.com"): 0,
    }  # sent, never reported by the provider


@pytest.mark.parametrize(
    "value, provider, want",
    [
        (
            "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "sendgrid",
            "14c5d75ce93.dfd.64b469",
        ),
        ("5lFl7Fr1Rjme_EyzNNB_5A.stfilter-015.5185.55F883172.0", None, "5lFl7Fr1Rjme_EyzNNB_5A"),
        ("<031a32d4@example.com>", "cmc", "031a32d4@example.com"),
        ("010001-ses-id-000000", "ses", "010001-ses-id-000000"),
        ("  ", None, None),
        (None, None, None),
    ],
)
def test_message_ids_are_normalised_as_events_are(value, provider, want):
    assert normalize_message_id(value, provider) == want


@pytest.mark.parametrize(
    "records, kw, error",
    [
        (["a@example.com"], {}, "no send_id"),
        ([{"email": "nobody"}], {"send_id": "s"}, "no address"),
        (["a@example.com"], {"send_id": "s", "provider": "mailgun"}, "not one of sendgrid"),
        ([{"email": "a@example.com", "sent_at": "yesterday"}], {"send_id": "s"}, "is not a time"),
    ],
)
def test_bad_records_say_what_to_fix(tmp_path, records, kw, error):
    with pytest.raises(SendsError, match=error):
        record_sends(records, warehouse=f"duckdb:///{tmp_path / 'w.duckdb'}", hasher=HASHER, **kw)
    with pytest.raises(TypeError, match="not one string"):
        record_sends(
            "a@example.com",
            send_id="s",
            warehouse=f"duckdb:///{tmp_path / 'w.duckdb'}",
            hasher=HASHER,
        )


# -- the command ------------------------------------------------------------------------
def test_cli_import_csv_twice(cli, tmp_path):
    uri = f"duckdb:///{tmp_path / 'w.duckdb'}"
    f = tmp_path / "sent.csv"
    f.write_text(
        "Email,X-Message-Id,Campaign,sent_at\n"
        "ann@example.com,14c5d75ce93.dfd.64b469,spring,2026-11-23T10:00:00Z\n"
        "bob@docomo.ne.jp,14c5d75ce93.dfd.64b470,spring,\n"
        "ann@example.com,14c5d75ce93.dfd.64b469,spring,2026-11-23T10:00:00Z\n"
    )
    res = cli(
        "sends",
        "import",
        f,
        "--send-id",
        "spring-1",
        "--warehouse",
        uri,
        "--sent-at",
        "2026-11-23T11:00:00Z",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == (
        f"{f}: recorded 2 recipients of send spring-1; 0 already in the log, 1 repeated in the "
        "file\n"
    )
    res = cli("sends", "import", f, "--send-id", "spring-1", "--warehouse", uri, "--format", "json")
    assert json.loads(res.stdout) == {
        "file": str(f),
        "recorded": 0,
        "already_recorded": 2,
        "duplicates": 1,
        "send_ids": ["spring-1"],
    }
    rows = read_sends(uri, "spring-1").to_dict(orient="records")
    assert sorted((r["message_id"], r["category"], r["sent_at"].isoformat()) for r in rows) == [
        ("14c5d75ce93.dfd.64b469", "spring", "2026-11-23T10:00:00+00:00"),
        ("14c5d75ce93.dfd.64b470", "spring", "2026-11-23T11:00:00+00:00"),
    ]


def test_cli_import_json_lines_and_errors(cli, tmp_path):
    uri = f"duckdb:///{tmp_path / 'w.duckdb'}"
    f = tmp_path / "sent.jsonl"
    f.write_text(
        '{"email": "ann@example.com", "send_id": "a", "provider": "ses", '
        '"message_id": "0100-ses"}\n{"email": "bob@example.com", "send_id": "b"}\n'
    )
    res = cli("sends", "import", f, "--warehouse", uri, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["send_ids"] == ["a", "b"]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,segment\nAnn,a\n")
    res = cli("sends", "import", bad, "--warehouse", uri)
    assert res.returncode == 2 and "email column" in res.stderr
    res = cli("sends", "import", tmp_path / "missing.csv", "--warehouse", uri)
    assert res.returncode == 2 and "no such file" in res.stderr
    nosend = tmp_path / "n.csv"
    nosend.write_text("email\nann@example.com\n")
    res = cli("sends", "import", nosend, "--warehouse", uri)
    assert res.returncode == 2 and "no send_id" in res.stderr
