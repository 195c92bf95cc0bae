"""Amazon SES normalizer on the payloads AWS (and django-anymail) publish.

Payloads live in tests/payloads/ses/ (see its README for where each came from). One test
per SES event type asserts every canonical field; the rest cover the shapes SES records
arrive in (Firehose lines, bare notifications, SNS envelopes, SQS messages and
receive-message dumps), multi-recipient records and dead letters.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import TEST_HASH_KEY

from pipelines.events import FIELD_NAMES, deterministic_event_id, event_to_json
from pipelines.hashing import EmailHasher
from pipelines.normalizers import (
    NormalizeSettings,
    detect_provider,
    normalize_bytes,
    normalize_document,
    ses,
)

PAYLOADS = Path(__file__).parent / "payloads" / "ses"
SOURCE = "test://payload"
DOC_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"


def load(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


def h(address: str) -> str:
    """The expected email_hash, computed independently of pipelines.hashing."""
    return hmac.new(
        TEST_HASH_KEY.encode(), address.strip().lower().encode(), hashlib.sha256
    ).hexdigest()


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def make_ctx(**kw) -> NormalizeSettings:
    return NormalizeSettings(hasher=EmailHasher(TEST_HASH_KEY), source_uri=SOURCE, **kw)


def run(doc, ctx=None, provider="ses"):
    res = normalize_document(doc, ctx or make_ctx(), provider)
    check_identity(res)
    return res


def check_identity(res) -> None:
    assert res.records == len(res.events) + len(res.dead_letters) + res.without_event


def only_event(res) -> dict:
    assert not res.dead_letters, [d.reason for d in res.dead_letters]
    assert len(res.events) == 1 and res.records == 1 and res.without_event == 0
    return res.events[0]


def assert_event(ev: dict, **expected) -> None:
    """Every canonical field, no more, no less: the test must name each one."""
    assert tuple(ev) == FIELD_NAMES
    missing = set(FIELD_NAMES) - set(expected)
    assert not missing, f"test does not state {sorted(missing)}"
    assert ev == expected
    assert re.fullmatch(r"[0-9a-f]{32}", ev["event_id"])
    assert ev["event_ts"].tzinfo is not None and ev["event_ts"].utcoffset().total_seconds() == 0
    assert ev["event_date"] == ev["event_ts"].date()


#: Configured tag for the event-publishing examples (they carry no ``category`` tag; the
#: default key is tested on its own below).
CONFIG_SET = "ses:configuration-set"


def common(**kw) -> dict:
    base = dict(
        provider="ses",
        bounce_class=None,
        message_id=DOC_MESSAGE_ID,
        recipient_domain="example.com",
        categories=["ConfigSet"],
        reason=None,
        smtp_status=None,
        url=None,
        attempt=None,
        source_uri=SOURCE,
        ingested_at=None,
    )
    base.update(kw)
    return base


# --------------------------------------------------------------------------- event types
# Event publishing records, "Examples of event data that Amazon SES publishes to Amazon SNS /
# Firehose". event_id values are pinned: a change would re-key every stored SES event and
# defeat de-duplication across loads (they depend on the hash key; this is the test key).


def test_bounce_record():
    ev = only_event(run(load("event_bounce.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="5b21cd93575254ec00f7faff95a887b4",
            event_type="bounce",
            provider_event_type="Bounce",
            bounce_class="hard",
            event_ts=utc("2017-08-05T00:41:02.669Z"),  # bounce.timestamp, not mail.timestamp
            event_date=date(2017, 8, 5),
            email_hash=h("recipient@example.com"),
            reason="smtp; 550 5.1.1 user unknown",
            smtp_status="5.1.1",
        ),
    )


def test_complaint_record():
    ev = only_event(run(load("event_complaint.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="e9213932b8056dc23a395074ac74cbee",
            event_type="spamreport",
            provider_event_type="Complaint",
            event_ts=utc("2017-08-05T00:41:02.669Z"),
            event_date=date(2017, 8, 5),
            email_hash=h("recipient@example.com"),
            reason="abuse",
        ),
    )


def test_delivery_record():
    ev = only_event(run(load("event_delivery.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="b9027817a2d305f4b1dfa7e267cdefc2",
            event_type="delivered",
            provider_event_type="Delivery",
            event_ts=utc("2016-10-19T23:21:04.133Z"),  # delivery.timestamp
            event_date=date(2016, 10, 19),
            email_hash=h("recipient@example.com"),
            reason="250 2.6.0 Message received",
        ),
    )


def test_send_record():
    ev = only_event(run(load("event_send.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="5388b5e798bfd1a517f7ca7a33c2796f",
            event_type="processed",
            provider_event_type="Send",
            event_ts=utc("2016-10-14T05:02:16.645Z"),  # ``send`` is {}: mail.timestamp
            event_date=date(2016, 10, 14),
            email_hash=h("recipient@example.com"),
        ),
    )


def test_reject_record():
    ev = only_event(run(load("event_reject.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="d262a6b66dae778ca2a2311dd34dccbe",
            event_type="dropped",
            provider_event_type="Reject",
            event_ts=utc("2016-10-14T17:38:15.211Z"),
            event_date=date(2016, 10, 14),
            # the documented example's mail.destination is the sender's address
            email_hash=h("sender@example.com"),
            reason="Bad content",
        ),
    )


def test_open_record():
    ev = only_event(run(load("event_open.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="c66895e5366f0b2e5a27a4ffd7e128d7",
            event_type="open",
            provider_event_type="Open",
            event_ts=utc("2017-08-09T22:00:19.652Z"),  # open.timestamp
            event_date=date(2017, 8, 9),
            email_hash=h("recipient@example.com"),
        ),
    )


def test_click_record():
    ev = only_event(run(load("event_click.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="ac82748015c9d633e956e3e3c6f57e3d",
            event_type="click",
            provider_event_type="Click",
            event_ts=utc("2017-08-09T23:51:25.570Z"),
            event_date=date(2017, 8, 9),
            email_hash=h("recipient@example.com"),
            url="http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html",
        ),
    )


def test_rendering_failure_record():
    ev = only_event(
        run(load("event_rendering_failure.json"), make_ctx(ses_category_tag=CONFIG_SET))
    )
    assert_event(
        ev,
        **common(
            event_id="eddce2995ac4128a05dd38276b777980",
            event_type="dropped",
            provider_event_type="Rendering Failure",
            event_ts=utc("2018-01-22T18:43:06.197Z"),  # ``failure`` has no time: mail.timestamp
            event_date=date(2018, 1, 22),
            email_hash=h("recipient@example.com"),
            reason="Attribute 'attributeName' is not present in the rendering data.",
        ),
    )


def test_delivery_delay_record():
    ev = only_event(run(load("event_delivery_delay.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="50dc88a1e30272ffa7696effc1c9b9d7",
            event_type="deferred",
            provider_event_type="DeliveryDelay",
            event_ts=utc("2020-06-16T00:25:40.095Z"),
            event_date=date(2020, 6, 16),
            email_hash=h("recipient@example.com"),
            reason="smtp; 421 4.4.1 Unable to connect to remote host",
            smtp_status="4.4.1",
        ),
    )


def test_subscription_record():
    ev = only_event(run(load("event_subscription.json"), make_ctx(ses_category_tag=CONFIG_SET)))
    assert_event(
        ev,
        **common(
            event_id="112709e6429feb9cc4461299acc4d4d1",
            event_type="unsubscribe",
            provider_event_type="Subscription",
            message_id="EXAMPLEe4bccb684-777bc8de-afa7-4970-92b0-f515137b1497-000000",
            event_ts=utc("2022-01-12T01:00:17.910Z"),  # subscription.timestamp
            event_date=date(2022, 1, 12),
            email_hash=h("recipient@example.com"),
        ),
    )


# ----------------------------------------------------------------------- notifications
# "Amazon SNS notification examples for Amazon SES" (notificationType; no tags).


def notif(**kw) -> dict:
    return common(categories=[], **kw)


def test_bounce_notification_with_dsn():
    ev = only_event(run(load("notification_bounce_dsn.json")))
    assert_event(
        ev,
        **notif(
            event_id="357c1d38463c851e4525d6c46770afe5",
            event_type="bounce",
            provider_event_type="Bounce",
            bounce_class="hard",
            message_id="00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            event_ts=utc("2016-01-27T14:59:38.237Z"),
            event_date=date(2016, 1, 27),
            email_hash=h("jane@example.com"),
            # the diagnostic code quotes the recipient: redacted, never stored plain
            reason="smtp; 550 5.1.1 <[redacted]@example.com>... User",
            smtp_status="5.1.1",
        ),
    )


def test_bounce_notification_without_dsn_names_two_of_three_recipients():
    res = run(load("notification_bounce_no_dsn.json"))
    assert res.records == 2 and not res.dead_letters and res.without_event == 0
    mid = "00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000"
    for ev, address, eid in zip(
        res.events,
        ["jane@example.com", "richard@example.com"],
        ["7e5d9f06359d0ac89bf71a59a75f9167", "68e18f3da822ac018d2da19d3ffcd312"],
    ):
        assert_event(
            ev,
            **notif(
                event_id=eid,
                event_type="bounce",
                provider_event_type="Bounce",
                bounce_class="hard",
                message_id=mid,
                event_ts=utc("2016-01-27T14:59:38.237Z"),
                event_date=date(2016, 1, 27),
                email_hash=h(address),
                reason="General",
            ),
        )  # no diagnosticCode: the bounce sub-type
    assert h("mary@example.com") not in {e["email_hash"] for e in res.events}


def test_complaint_notification_with_feedback_report():
    ev = only_event(run(load("notification_complaint_feedback.json")))
    assert_event(
        ev,
        **notif(
            event_id="d5e9b358e9da9305792a1dcfa1c63767",
            event_type="spamreport",
            provider_event_type="Complaint",
            message_id="000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
            event_ts=utc("2016-01-27T14:59:38.237Z"),
            event_date=date(2016, 1, 27),
            email_hash=h("richard@example.com"),
            reason="abuse",
        ),
    )


def test_complaint_notification_without_feedback_report():
    ev = only_event(run(load("notification_complaint_no_feedback.json")))
    assert_event(
        ev,
        **notif(
            event_id="3dd0fda76bed6a54b0285cf3cccb4080",
            event_type="spamreport",
            provider_event_type="Complaint",
            message_id="0000013786031775-163e3910-53eb-4c8e-a04a-f29debf88a84-000000",
            event_ts=utc("2016-01-27T14:59:38.237Z"),
            event_date=date(2016, 1, 27),
            email_hash=h("richard@example.com"),
            reason=None,
        ),
    )


def test_delivery_notification():
    ev = only_event(run(load("notification_delivery.json")))
    assert_event(
        ev,
        **notif(
            event_id="aa67259c7ed596b655c763f860bedd06",
            event_type="delivered",
            provider_event_type="Delivery",
            message_id="0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
            event_ts=utc("2016-01-27T14:59:38.237Z"),
            event_date=date(2016, 1, 27),
            email_hash=h("jane@example.com"),
            reason="250 ok:  Message 64111812 accepted",
        ),
    )  # trimmed, inner spaces kept


def test_anymail_sns_bounce_envelope():
    """django-anymail's SNS envelope: Message is a JSON string with a trailing newline."""
    doc = load("sns_notification_bounce.json")
    assert doc["Message"].endswith("\n")
    ev = only_event(run(doc))
    assert_event(
        ev,
        **notif(
            event_id="202813deba64901df4927be7117bdee9",
            event_type="bounce",
            provider_event_type="Bounce",
            bounce_class="hard",
            message_id="00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            event_ts=utc("2016-01-27T14:59:44.101Z"),  # bounce.timestamp, not the SNS Timestamp
            event_date=date(2016, 1, 27),
            email_hash=h("jane@example.com"),
            reason="smtp; 550 5.1.1 <[redacted]@example.com>... User unknown",
            smtp_status="5.1.1",
        ),
    )


EVENT_FILES = sorted(p.name for p in PAYLOADS.glob("event_*.json"))
NOTIFICATION_FILES = sorted(p.name for p in PAYLOADS.glob("notification_*.json"))
ALL_FILES = sorted(p.name for p in PAYLOADS.glob("*.json"))


def test_every_documented_event_type_is_covered():
    words = {load(n)["eventType"] for n in EVENT_FILES}
    assert words == set(ses.EVENT_MAP)
    assert {load(n)["notificationType"] for n in NOTIFICATION_FILES} == {
        "Bounce",
        "Complaint",
        "Delivery",
    }


@pytest.mark.parametrize("name", ALL_FILES)
def test_auto_detection_picks_ses(name):
    assert detect_provider(load(name)) == "ses"
    auto = normalize_document(load(name), make_ctx(), "auto")
    assert auto.events == run(load(name)).events


# ------------------------------------------------------------------ categories and fields


def test_categories_come_from_the_default_category_tag():
    doc = load("event_send.json")
    doc["mail"]["tags"]["category"] = [" welcome ", "onboarding", "welcome", ""]
    ev = only_event(run(doc))  # default key: ``category``
    assert ev["categories"] == ["welcome", "onboarding"]  # trimmed, unique, order kept
    assert only_event(run(load("event_send.json")))["categories"] == []


def test_categories_tag_key_is_configurable():
    ctx = make_ctx(ses_category_tag="myCustomTag1")
    assert only_event(run(load("event_send.json"), ctx))["categories"] == ["myCustomTagValue1"]
    assert only_event(run(load("event_open.json"), ctx))["categories"] == ["myCustomValue1"]


@pytest.mark.parametrize(
    "bounce_type,expected",
    [
        ("Permanent", "hard"),
        ("Transient", "soft"),
        ("Undetermined", "undetermined"),
        (" Transient ", "soft"),
        (None, "undetermined"),
        ("SomethingNew", "undetermined"),
    ],
)
def test_bounce_class(bounce_type, expected):
    doc = load("event_bounce.json")
    if bounce_type is None:
        del doc["bounce"]["bounceType"]
    else:
        doc["bounce"]["bounceType"] = bounce_type
    assert only_event(run(doc))["bounce_class"] == expected


def test_lineage_fields_come_from_the_context():
    at = datetime(2026, 1, 5, 3, 0, tzinfo=timezone.utc)
    ctx = NormalizeSettings(
        hasher=EmailHasher(TEST_HASH_KEY),
        source_uri="archive/ses/2026/01/05/03/a.json.gz",
        ingested_at=at,
    )
    ev = only_event(run(load("event_open.json"), ctx))
    assert ev["source_uri"] == "archive/ses/2026/01/05/03/a.json.gz"
    assert ev["ingested_at"] == at
    assert (
        only_event(
            run(load("event_open.json"), NormalizeSettings(hasher=EmailHasher(TEST_HASH_KEY)))
        )["source_uri"]
        is None
    )


def test_event_id_is_the_documented_deterministic_hash():
    ev = only_event(run(load("event_click.json")))
    assert ev["event_id"] == deterministic_event_id(
        "ses",
        DOC_MESSAGE_ID,
        "Click",
        h("recipient@example.com"),
        utc("2017-08-09T23:51:25.570Z"),
        "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html",
    )


def test_event_id_tells_apart_what_differs():
    base = only_event(run(load("event_open.json")))["event_id"]
    later = load("event_open.json")
    later["open"]["timestamp"] = "2017-08-09T22:05:19.652Z"  # a second open
    other = load("event_open.json")
    other["mail"]["destination"] = ["someone.else@example.com"]
    click = load("event_click.json")
    click2 = load("event_click.json")
    click2["click"]["link"] = "https://example.com/another-link"
    ids = {
        base,
        only_event(run(later))["event_id"],
        only_event(run(other))["event_id"],
        only_event(run(click))["event_id"],
        only_event(run(click2))["event_id"],
    }
    assert len(ids) == 5


def test_unknown_event_type_is_kept_as_unknown():
    doc = load("event_send.json")
    doc["eventType"] = "SomethingNew"
    doc["somethingNew"] = {"timestamp": "2016-10-14T05:03:00.000Z"}
    ev = only_event(run(doc))
    assert ev["event_type"] == "unknown" and ev["provider_event_type"] == "SomethingNew"
    assert ev["event_ts"] == utc("2016-10-14T05:03:00.000Z")  # its own payload's time


def test_click_link_quoting_an_address_is_redacted():
    doc = load("event_click.json")
    doc["click"]["link"] = (
        "https://example.com/prefs?email=Jane.Doe%40example.com&u=jane@example.com"
    )
    ev = only_event(run(doc))
    assert ev["url"] == (
        "https://example.com/prefs?email=[redacted]%40example.com&u=[redacted]@example.com"
    )
    assert "jane" not in json.dumps(event_to_json(ev)).lower()


# ----------------------------------------------------------------------------- timestamps


def test_missing_type_timestamp_falls_back_to_mail_timestamp():
    doc = load("event_bounce.json")
    del doc["bounce"]["timestamp"]
    assert only_event(run(doc))["event_ts"] == utc("2017-08-05T00:40:02.012Z")


@pytest.mark.parametrize(
    "value,reason",
    [
        ("yesterday", "Bounce record: bounce.timestamp: unreadable timestamp 'yesterday'"),
        (1501893662, "Bounce record: bounce.timestamp: missing timestamp"),
        (
            "0001-01-01T00:00:00+01:00",
            "Bounce record: bounce.timestamp: timestamp out of range: '0001-01-01T00:00:00+01:00'",
        ),
        (
            "1969-12-31T23:59:59Z",
            "Bounce record: bounce.timestamp: timestamp out of range: 1969-12-31T23:59:59+00:00",
        ),
    ],
)
def test_unreadable_timestamp_is_a_dead_letter(value, reason):
    doc = load("event_bounce.json")
    doc["bounce"]["timestamp"] = value
    res = run(doc)
    assert not res.events and res.records == 1
    [dl] = res.dead_letters
    assert dl.reason == reason and dl.provider == "ses"
    assert json.loads(dl.raw) == doc


def test_offset_timestamp_is_converted_to_utc_date():
    doc = load("event_open.json")
    doc["open"]["timestamp"] = "2017-08-10T07:30:00.000+09:00"
    ev = only_event(run(doc))
    assert ev["event_ts"] == utc("2017-08-09T22:30:00Z") and ev["event_date"] == date(2017, 8, 9)


# --------------------------------------------------------------------------------- shapes


def compact(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def sns(doc, **extra) -> dict:
    """An SNS Notification envelope around a record, shaped like django-anymail's."""
    env = load("sns_notification_bounce.json")
    env["Message"] = json.dumps(doc) + "\n"
    env.update(extra)
    return env


def sqs(body: dict | str, n: int = 0) -> dict:
    """One SQS message as `aws sqs receive-message` prints it."""
    text_body = body if isinstance(body, str) else json.dumps(body)
    return {
        "MessageId": f"5fea7756-0ea4-451a-a703-a558b933e27{n}",
        "ReceiptHandle": f"AQEBzbVv...{n}",
        "MD5OfBody": hashlib.md5(text_body.encode()).hexdigest(),
        "Body": text_body,
    }


def test_firehose_file_one_record_per_line_plain_and_gzip():
    """Firehose writes each record followed by a newline; archives may be gzip."""
    data = b"".join(compact(load(n)) + b"\n" for n in EVENT_FILES)
    ctx = make_ctx(ses_category_tag=CONFIG_SET)
    for blob in (data, gzip.compress(data)):
        from pipelines.records import decompress

        res = normalize_bytes(decompress(blob), ctx, "auto")
        check_identity(res)
        assert res.records == 10 and len(res.events) == 10 and not res.dead_letters
        assert [e["provider_event_type"] for e in res.events] == [
            load(n)["eventType"] for n in EVENT_FILES
        ]
        for name, ev in zip(EVENT_FILES, res.events):
            assert ev == only_event(run(load(name), ctx))


@pytest.mark.parametrize("name", EVENT_FILES + NOTIFICATION_FILES)
def test_envelopes_give_the_same_events_as_the_bare_record(name):
    bare = run(load(name)).events
    assert bare
    shapes = {
        "sns": sns(load(name)),
        "sqs(sns)": sqs(sns(load(name))),
        "sqs raw delivery": sqs(load(name)),  # SNS raw message delivery: Body is the record
        "sns, Message already decoded": dict(sns(load(name)), Message=load(name)),
        "receive-message dump": {"Messages": [sqs(sns(load(name)))]},
    }
    for label, doc in shapes.items():
        res = run(doc, provider="auto")
        assert res.events == bare, label
        assert res.records == len(bare) and not res.dead_letters, label


def test_receive_message_dump_mixes_events_and_setup_messages():
    dump = {
        "Messages": [
            sqs(sns(load("event_bounce.json")), 0),
            sqs(load("sns_subscription_confirmation.json"), 1),
            sqs(sns(load("notification_bounce_no_dsn.json")), 2),
            sqs(load("sns_ses_subscription_succeeded.json"), 3),
        ]
    }
    res = run(dump, provider="auto")
    assert len(res.events) == 3 and res.without_event == 2 and not res.dead_letters
    assert res.records == 5


def test_empty_receive_message_dump_is_counted_without_event():
    res = run({"Messages": []}, provider="auto")
    assert (res.records, res.without_event, res.events, res.dead_letters) == (1, 1, [], [])


def test_one_bad_message_does_not_sink_the_dump():
    dump = {
        "Messages": [
            sqs(sns(load("event_open.json")), 0),
            sqs("<Bounce report>", 1),
            "not an object",
            sqs(sns(load("event_click.json")), 3),
        ]
    }
    res = run(dump)
    assert [e["provider_event_type"] for e in res.events] == ["Open", "Click"]
    assert [d.record_index for d in res.dead_letters] == [1, 2]
    # the parser's own words, as for a line of a file that is not JSON
    assert re.fullmatch(
        r"Messages\[1\]: SQS message Body is not JSON: .+", res.dead_letters[0].reason
    )
    assert res.dead_letters[1].reason == "Messages[2] is not an SQS message object"
    assert json.loads(res.dead_letters[0].raw)["Body"] == "<Bounce report>"


@pytest.mark.parametrize(
    "name",
    [
        "sns_subscription_confirmation.json",
        "sns_unsubscribe_confirmation.json",
        "sns_topic_validated.json",
        "sns_ses_subscription_succeeded.json",
    ],
)
def test_setup_messages_carry_no_event(name):
    for doc in (load(name), sqs(load(name)), {"Messages": [sqs(load(name))]}):
        res = run(doc, provider="auto")
        assert (res.records, res.without_event, res.events, res.dead_letters) == (1, 1, [], [])


@pytest.mark.parametrize(
    "message,reason",
    [
        # not JSON: the parser's own words, as for a line of a file that is not JSON
        ("Your bounce report is attached", r"SNS Message is not JSON: unexpected character.*"),
        ('{"eventType": "Bounce", ', r"SNS Message is not JSON: unexpected end of data.*"),
        (r'"\udc80 lone surrogate"', r"SNS Message holds a string, not an SES record object"),
        ("[1, 2]", r"SNS Message holds an array, not an SES record object"),
        (
            '{ "uuid": "12341234uu",  "status": "Processing" }',
            r"no SES record: neither eventType nor notificationType in an object with keys "
            r"\[status, uuid\]",
        ),
        (None, r"SNS Message is missing"),
        (42, r"SNS Message is a number, not a JSON string"),
    ],
)
def test_sns_message_that_is_no_ses_record_is_a_dead_letter(message, reason):
    env = sns({})
    env["Message"] = message
    res = run(env, provider="auto")
    assert not res.events and res.records == 1
    [dl] = res.dead_letters
    assert re.fullmatch(reason, dl.reason) and dl.provider == "ses"
    assert json.loads(dl.raw) == env  # the envelope as received, so it can be re-read


def test_dead_letter_from_a_file_points_at_its_line():
    lines = [
        compact(load("event_send.json")),
        compact(sns({}, Message="plain text")),
        compact(sns(load("event_open.json"))),
    ]
    ctx = make_ctx()
    res = normalize_bytes(b"\n".join(lines) + b"\n", ctx, "auto")
    check_identity(res)
    assert len(res.events) == 2
    [dl] = res.dead_letters
    assert (dl.line, dl.source_uri, dl.provider) == (2, SOURCE, "ses")
    assert dl.reason.startswith("SNS Message is not JSON: ")


def test_unknown_sns_type_is_a_dead_letter():
    env = sns(load("event_send.json"), Type="Notice")
    [dl] = run(env).dead_letters
    assert dl.reason == (
        "unknown SNS message Type 'Notice' (expected Notification, "
        "SubscriptionConfirmation or UnsubscribeConfirmation)"
    )


def test_record_without_mail_object_is_a_dead_letter():
    doc = load("event_bounce.json")
    del doc["mail"]
    res = run(doc)
    assert [d.reason for d in res.dead_letters] == ["Bounce record has no mail object"]


@pytest.mark.parametrize(
    "value,reason",
    [
        (None, "eventType is null, not an SES event name"),
        ("  ", "eventType is an empty string, not an SES event name"),
        (7, "eventType is a number, not an SES event name"),
    ],
)
def test_unusable_event_name_is_a_dead_letter(value, reason):
    doc = load("event_send.json")
    doc["eventType"] = value
    assert [d.reason for d in run(doc).dead_letters] == [reason]


# ------------------------------------------------------------------------ multi-recipient

A, B, C = "ann@example.org", "Bob.Smith@Example.NET", "carol@example.com"


def test_delivery_names_only_the_delivered_recipients():
    doc = load("event_delivery.json")
    doc["mail"]["destination"] = [A, B, C]
    doc["delivery"]["recipients"] = [A, B]
    res = run(doc)
    assert [e["email_hash"] for e in res.events] == [h(A), h(B)]
    assert [e["recipient_domain"] for e in res.events] == ["example.org", "example.net"]
    assert res.records == 2 and not res.dead_letters


def test_delivery_delay_one_event_per_delayed_recipient_with_its_own_status():
    doc = load("event_delivery_delay.json")
    doc["mail"]["destination"] = [A, B, C]
    doc["deliveryDelay"]["delayedRecipients"].append(
        {"emailAddress": C, "status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 Mailbox full"}
    )
    doc["deliveryDelay"]["delayedRecipients"][0]["emailAddress"] = A
    res = run(doc)
    assert [(e["email_hash"], e["smtp_status"], e["reason"]) for e in res.events] == [
        (h(A), "4.4.1", "smtp; 421 4.4.1 Unable to connect to remote host"),
        (h(C), "4.2.2", "smtp; 452 4.2.2 Mailbox full"),
    ]
    assert len({e["event_id"] for e in res.events}) == 2


def test_complaint_one_event_per_complained_recipient():
    doc = load("notification_complaint_feedback.json")
    doc["complaint"]["complainedRecipients"].append({"emailAddress": "jane@example.com"})
    res = run(doc)
    assert [e["email_hash"] for e in res.events] == [
        h("richard@example.com"),
        h("jane@example.com"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "event_send.json",
        "event_reject.json",
        "event_open.json",
        "event_click.json",
        "event_rendering_failure.json",
        "event_subscription.json",
    ],
)
def test_types_without_a_recipient_list_use_mail_destination(name):
    doc = load(name)
    doc["mail"]["destination"] = [A, B, C]
    res = run(doc)
    assert [e["email_hash"] for e in res.events] == [h(A), h(B), h(C)]
    assert len({e["event_id"] for e in res.events}) == 3
    assert res.records == 3


def test_recipient_entries_without_an_address_are_dead_letters_for_that_recipient_only():
    doc = load("event_bounce.json")
    doc["bounce"]["bouncedRecipients"] = [
        {"emailAddress": A, "status": "5.1.1"},
        {"status": "5.1.1", "action": "failed"},
        {"emailAddress": "   "},
        "not-an-object-but-an-address@example.com",
        None,
    ]
    res = run(doc)
    assert [e["email_hash"] for e in res.events] == [
        h(A),
        h("not-an-object-but-an-address@example.com"),
    ]
    assert [(d.record_index, d.reason) for d in res.dead_letters] == [
        (1, "Bounce record: bounce.bouncedRecipients[1] has no emailAddress"),
        (2, "Bounce record: bounce.bouncedRecipients[2] has no emailAddress"),
        (4, "Bounce record: bounce.bouncedRecipients[4] is null, not an address"),
    ]
    assert all(json.loads(d.raw) == doc for d in res.dead_letters)
    assert res.records == 5 == len(res.events) + len(res.dead_letters)


def test_destination_entry_without_an_address():
    doc = load("event_send.json")
    doc["mail"]["destination"] = [A, 17, ""]
    res = run(doc)
    assert [e["email_hash"] for e in res.events] == [h(A)]
    assert [d.reason for d in res.dead_letters] == [
        "Send record: mail.destination[1] is a number, not an address",
        "Send record: mail.destination[2] is an empty string, not an address",
    ]


def test_missing_recipient_list_with_one_destination_uses_it():
    doc = load("event_bounce.json")
    del doc["bounce"]["bouncedRecipients"]
    ev = only_event(run(doc))
    assert ev["email_hash"] == h("recipient@example.com")
    assert ev["reason"] == "General" and ev["smtp_status"] is None


@pytest.mark.parametrize("recipients", [None, []])
def test_missing_recipient_list_with_several_destinations_is_a_dead_letter(recipients):
    """Blaming every destination for a bounce nobody named would be wrong."""
    doc = load("notification_bounce_no_dsn.json")
    doc["bounce"]["bouncedRecipients"] = recipients
    res = run(doc)
    assert not res.events
    assert [d.reason for d in res.dead_letters] == [
        "Bounce record has no bounce.bouncedRecipients and mail.destination names 3 "
        "recipients: cannot tell which were affected"
    ]


@pytest.mark.parametrize(
    "destination,reason",
    [
        ([], "Send record names no recipient (mail.destination is empty)"),
        (None, "Send record names no recipient (mail.destination is null)"),
        ("recipient@example.com", "Send record names no recipient (mail.destination is a string)"),
    ],
)
def test_record_without_any_recipient_is_a_dead_letter(destination, reason):
    doc = load("event_send.json")
    doc["mail"]["destination"] = destination
    assert [d.reason for d in run(doc).dead_letters] == [reason]


def test_display_name_address_hashes_like_the_bare_address():
    doc = load("event_send.json")
    doc["mail"]["destination"] = ['"Jane Doe" <Jane@Example.com>']
    ev = only_event(run(doc))
    assert ev["email_hash"] == h("jane@example.com") and ev["recipient_domain"] == "example.com"


# ------------------------------------------------------------------------------------ CLI


def test_cli_normalize_reads_a_firehose_file_and_an_sqs_dump(tmp_path, cli):
    firehose = tmp_path / "firehose.json.gz"
    firehose.write_bytes(gzip.compress(b"".join(compact(load(n)) + b"\n" for n in EVENT_FILES)))
    dump = tmp_path / "sqs-dump.json"
    dump.write_text(
        json.dumps(
            {
                "Messages": [
                    sqs(sns(load("notification_bounce_no_dsn.json"))),
                    sqs(load("sns_subscription_confirmation.json")),
                    sqs(sns({}, Message="not json at all")),
                ]
            },
            indent=2,
        )
    )
    proc = cli("normalize", "--provider", "auto", firehose, dump)
    assert proc.returncode == 3, proc.stderr  # a dead letter in the dump
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(events) == 12
    assert events[0]["event_ts"] == "2017-08-05T00:41:02.669000Z"
    assert all(e["provider"] == "ses" for e in events)
    assert "@" not in "".join(str(e.get("reason")) for e in events).replace("[redacted]@", "")
    [dl] = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert dl["source"] == str(dump) and dl["line"] == 1 and dl["record_index"] == 2
    assert dl["reason"].startswith("Messages[2]: SNS Message is not JSON: ")


# ------------------------------------------------- time from the SNS envelope (issue 11)
# The anymail SNS envelope (sns_notification_bounce.json) around documented records, with
# the record's own time removed where a test needs a record "without a time of its own".
SNS_TS = utc("2018-03-26T17:58:59.675Z")  # the envelope's Timestamp


def _anymail_bounce_without_its_time() -> dict:
    env = load("sns_notification_bounce.json")
    inner = json.loads(env["Message"])
    del inner["bounce"]["timestamp"]
    env["Message"] = json.dumps(inner) + "\n"
    return env


def test_sns_bounce_without_its_own_time_takes_the_envelope_timestamp():
    env = _anymail_bounce_without_its_time()
    ev = only_event(run(env))
    mid = "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000"
    assert_event(
        ev,
        **notif(
            event_id=deterministic_event_id("ses", mid, "Bounce", h("jane@example.com"), SNS_TS),
            event_type="bounce",
            provider_event_type="Bounce",
            bounce_class="hard",
            message_id=mid,
            # not mail.timestamp (2016-01-27T14:59:38.237Z, when the mail was sent)
            event_ts=SNS_TS,
            event_date=date(2018, 3, 26),
            email_hash=h("jane@example.com"),
            reason="smtp; 550 5.1.1 <[redacted]@example.com>... User unknown",
            smtp_status="5.1.1",
        ),
    )
    # the same envelope as an SQS message, alone or in a receive-message dump: the same
    for doc in (sqs(env), {"Messages": [sqs(env)]}):
        assert run(doc, provider="auto").events == [ev]


def test_bare_or_raw_delivered_record_without_its_own_time_keeps_the_mail_time():
    # No envelope (Firehose line; SNS raw message delivery into SQS): no Timestamp to take.
    inner = json.loads(_anymail_bounce_without_its_time()["Message"])
    for doc in (inner, sqs(inner)):
        assert only_event(run(doc))["event_ts"] == utc("2016-01-27T14:59:38.237Z")


@pytest.mark.parametrize(
    "name", ["event_send.json", "event_reject.json", "event_rendering_failure.json"]
)
def test_types_timed_by_the_mail_keep_it_inside_an_envelope(name):
    # Send, Reject, Rendering Failure: mail.timestamp *is* their time.
    ev = only_event(run(sns(load(name))))
    assert ev["event_ts"] == utc(load(name)["mail"]["timestamp"])
    # ... and when even that is missing, the envelope's time rather than a dead letter
    doc = load(name)
    del doc["mail"]["timestamp"]
    assert only_event(run(sns(doc)))["event_ts"] == SNS_TS
    [dl] = run(doc).dead_letters  # bare: nothing to fall back on
    assert dl.reason == f"{doc['eventType']} record: mail.timestamp: missing timestamp"


def test_own_time_wins_over_the_envelope_timestamp():
    for name in EVENT_FILES + NOTIFICATION_FILES:
        doc = load(name)
        assert run(sns(doc)).events == run(doc).events, name


def test_unreadable_envelope_timestamp_is_a_dead_letter():
    env = _anymail_bounce_without_its_time()
    env["Timestamp"] = "last tuesday"
    res = run(env)
    assert not res.events
    [dl] = res.dead_letters
    assert dl.reason == "Bounce record: SNS Timestamp: unreadable timestamp 'last tuesday'"
    assert json.loads(dl.raw) == env


# --------------------------------------------------- SES inbound (Received) notifications
# "Examples of notifications for Amazon SES email receiving" (README): an SNS-action
# notification (with the raw mail in ``content``) and an alert (S3 action).
INBOUND_FILES = ["inbound_received_sns_action.json", "inbound_received_s3_action.json"]


@pytest.mark.parametrize("name", INBOUND_FILES)
def test_inbound_received_notification_is_a_record_without_event(name):
    doc = load(name)
    assert doc["notificationType"] == "Received"
    shapes = {
        "bare": doc,
        "sns": sns(doc),
        "sqs(sns)": sqs(sns(doc)),
        "sqs raw delivery": sqs(doc),
        "receive-message dump": {"Messages": [sqs(sns(doc))]},
    }
    for label, shape in shapes.items():
        res = run(shape, provider="auto")
        assert (res.records, res.without_event, res.events, res.dead_letters) == (1, 1, [], []), (
            label
        )


def test_inbound_receipts_mixed_with_sending_events_count_apart():
    # One topic for both: a dump of a bounce, two receipts and a delivery.
    dump = {
        "Messages": [
            sqs(sns(load("notification_bounce_dsn.json")), 0),
            sqs(sns(load(INBOUND_FILES[0])), 1),
            sqs(sns(load(INBOUND_FILES[1])), 2),
            sqs(sns(load("notification_delivery.json")), 3),
        ]
    }
    res = run(dump, provider="auto")
    assert [e["event_type"] for e in res.events] == ["bounce", "delivered"]
    assert (res.records, res.without_event, res.dead_letters) == (4, 2, [])
    assert "unknown" not in {e["event_type"] for e in res.events}


def test_inbound_receipt_in_a_firehose_style_file_is_counted_not_unknown():
    data = b"".join(
        compact(d) + b"\n"
        for d in (load("event_send.json"), load(INBOUND_FILES[1]), load("event_open.json"))
    )
    res = normalize_bytes(data, make_ctx(), "auto")
    check_identity(res)
    assert [e["provider_event_type"] for e in res.events] == ["Send", "Open"]
    assert (res.records, res.without_event, res.dead_letters) == (3, 1, [])
