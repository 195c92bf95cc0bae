"""SendGrid Event Webhook -> canonical events, on SendGrid's own published payloads.

Payload files live in tests/payloads/sendgrid/ (SOURCES.md lists every origin). Unless a
test says otherwise a payload comes from Twilio SendGrid's "Event Webhook Reference"
(https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event), one example
per event type. Every event-type test compares the WHOLE canonical event, so a field
that goes wrong (or a field that appears) fails it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import TEST_HASH_KEY

from pipelines.events import FIELD_NAMES, deterministic_event_id
from pipelines.normalizers import normalize_bytes, normalize_record
from pipelines.records import RawRecord

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "sendgrid"

#: The message part of the reference's sg_message_id ``14c5d75ce93.dfd.64b469.filter0001...``.
DOC_MESSAGE_ID = "14c5d75ce93.dfd.64b469"
#: ``"timestamp": 1513299569`` in the reference examples.
DOC_TS = datetime(2017, 12, 15, 0, 59, 29, tzinfo=timezone.utc)


def h(address: str) -> str:
    """The expected email_hash, computed independently of pipelines.hashing."""
    return hmac.new(
        TEST_HASH_KEY.encode(), address.strip().lower().encode(), hashlib.sha256
    ).hexdigest()


def load(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def expected(**fields) -> dict:
    ev = {
        "event_id": None,
        "provider": "sendgrid",
        "event_type": None,
        "provider_event_type": None,
        "bounce_class": None,
        "event_ts": DOC_TS,
        "message_id": DOC_MESSAGE_ID,
        "email_hash": h("alex@example.com"),
        "recipient_domain": "example.com",
        "categories": ["cat facts"],
        "reason": None,
        "smtp_status": None,
        "url": None,
        "attempt": None,
        "source_uri": "test://payload",
        "ingested_at": None,
    }
    ev.update(fields)
    ev["event_date"] = ev["event_ts"].date()
    return ev


def only_event(ctx, data: bytes) -> dict:
    res = normalize_bytes(data, ctx)
    assert res.dead_letters == [], [d.reason for d in res.dead_letters]
    assert (res.records, len(res.events), res.without_event) == (1, 1, 0)
    ev = res.events[0]
    assert list(ev) == list(FIELD_NAMES) or set(ev) == set(FIELD_NAMES)
    return ev


def sg(ctx, items) -> "Result":  # noqa: F821 - a batch given as Python objects
    return normalize_bytes(json.dumps(items).encode(), ctx)


# --- one test per event type -------------------------------------------------------


def test_processed(ctx):
    # Reference, "Processed events" (pool object; 21-zero suffix on sg_message_id).
    ev = only_event(ctx, load("processed.json"))
    assert ev == expected(
        event_id="rbtnWrG1DVDGGGFHFyun0A==", event_type="processed", provider_event_type="processed"
    )


def test_dropped(ctx):
    # Reference, "Dropped events".
    ev = only_event(ctx, load("dropped.json"))
    assert ev == expected(
        event_id="zmzJhfJgAfUSOW80yEbPyw==",
        event_type="dropped",
        provider_event_type="dropped",
        reason="Bounced Address",
        smtp_status="5.0.0",
    )


def test_delivered(ctx):
    # Reference, "Delivered events": the SMTP response is the reason.
    ev = only_event(ctx, load("delivered.json"))
    assert ev == expected(
        event_id="rWVYmVk90MjZJ9iohOBa3w==",
        event_type="delivered",
        provider_event_type="delivered",
        reason="250 OK",
    )


def test_deferred(ctx):
    # Reference, "Deferred events": sg_message_id arrives with a stray leading space.
    raw = json.loads(load("deferred.json"))
    assert raw[0]["sg_message_id"].startswith(" ")
    ev = only_event(ctx, load("deferred.json"))
    assert ev == expected(
        event_id="t7LEShmowp86DTdUW8M-GQ==",
        event_type="deferred",
        provider_event_type="deferred",
        reason="400 try again later",
        attempt="5",
    )


def test_bounce(ctx):
    # Reference, "Bounce type of Bounce event" (``"type": "bounce"``): a hard bounce.
    ev = only_event(ctx, load("bounce.json"))
    assert ev == expected(
        event_id="6g4ZI7SA-xmRDv57GoPIPw==",
        event_type="bounce",
        provider_event_type="bounce",
        bounce_class="hard",
        reason="500 unknown recipient",
        smtp_status="5.0.0",
    )


def test_bounce_blocked(ctx):
    # Reference, "Blocked type of Bounce event" (``"type": "blocked"``).
    ev = only_event(ctx, load("bounce_blocked.json"))
    assert ev == expected(
        event_id="6g4ZI7SA-xmRDv57GoPIPw==",
        event_type="bounce",
        provider_event_type="bounce",
        bounce_class="block",
        reason="500 unknown recipient",
        smtp_status="5.0.0",
    )


def test_open(ctx):
    # Reference, "Open events" (no smtp-id; sg_machine_open false).
    ev = only_event(ctx, load("open.json"))
    assert ev == expected(
        event_id="FOTFFO0ecsBE-zxFXfs6WA==", event_type="open", provider_event_type="open"
    )


def test_click(ctx):
    # Reference, "Click events": category as an array, a unique arg at top level, the
    # placeholder ids SendGrid prints there, and an sg_message_id without a filter suffix.
    ev = only_event(ctx, load("click.json"))
    assert ev == expected(
        event_id="sendgrid_internal_event_id",
        event_type="click",
        provider_event_type="click",
        event_ts=datetime(2009, 8, 11, tzinfo=timezone.utc),
        message_id="sendgrid_internal_message_id",
        email_hash=h("email@example.com"),
        categories=["category1", "category2"],
        url="http://example.com/blog/news.html",
    )


def test_spamreport(ctx):
    # Reference, "Spam report events" (no category at all).
    ev = only_event(ctx, load("spamreport.json"))
    assert ev == expected(
        event_id="37nvH5QBz858KGVYCM4uOA==",
        event_type="spamreport",
        provider_event_type="spamreport",
        categories=[],
    )


def test_unsubscribe(ctx):
    # Reference, "Unsubscribe events".
    ev = only_event(ctx, load("unsubscribe.json"))
    assert ev == expected(
        event_id="zz_BjPgU_5pS-J8vlfB1sg==",
        event_type="unsubscribe",
        provider_event_type="unsubscribe",
    )


def test_group_unsubscribe(ctx):
    # Reference, "Group unsubscribe events".
    ev = only_event(ctx, load("group_unsubscribe.json"))
    assert ev == expected(
        event_id="ahSCB7xYcXFb-hEaawsPRw==",
        event_type="group_unsubscribe",
        provider_event_type="group_unsubscribe",
        url="http://www.example.com/",
    )


def test_group_resubscribe(ctx):
    # Reference, "Group resubscribe events".
    ev = only_event(ctx, load("group_resubscribe.json"))
    assert ev == expected(
        event_id="w_u0vJhLT-OFfprar5N93g==",
        event_type="group_resubscribe",
        provider_event_type="group_resubscribe",
        url="http://www.example.com/",
    )


def test_unknown_event_type_is_kept_as_unknown(ctx):
    # SendGrid documents no event outside the vocabulary, so this is the reference's open
    # example with its event name replaced (a future SendGrid event must not be an error).
    items = json.loads(load("open.json"))
    items[0]["event"] = "Machine_Open"
    ev = only_event(ctx, json.dumps(items).encode())
    assert ev == expected(
        event_id="FOTFFO0ecsBE-zxFXfs6WA==",
        event_type="unknown",
        provider_event_type="Machine_Open",
    )


def test_account_status_change_is_counted_without_an_event(ctx):
    # Reference, "Account status change events": no recipient, so no event and no dead
    # letter; the record is counted as one that carries no event.
    res = normalize_bytes(load("account_status_change.json"), ctx)
    assert (res.records, res.events, res.dead_letters, res.without_event) == (1, [], [], 1)


def test_account_status_change_inside_a_batch(ctx):
    items = json.loads(load("account_status_change.json")) + json.loads(load("delivered.json"))
    res = sg(ctx, items)
    assert (res.records, len(res.events), len(res.dead_letters), res.without_event) == (2, 1, 0, 1)
    assert res.events[0]["event_type"] == "delivered"


# --- more real payloads: quirks ------------------------------------------------------


def test_unique_args_example_capitalised_event_and_string_timestamp(ctx):
    # Reference, "Events webhook call with unique arguments": ``"event": "Processed"``,
    # ``"timestamp": "123456789"`` (a numeric string, 1973), custom args at top level, and
    # neither sg_event_id nor any message id.
    ev = only_event(ctx, load("unique_args_processed.json"))
    ts = datetime(1973, 11, 29, 21, 33, 9, tzinfo=timezone.utc)
    assert ev == expected(
        event_id=deterministic_event_id("sendgrid", None, "processed", h("alex@example.com"), ts),
        event_type="processed",
        provider_event_type="Processed",
        event_ts=ts,
        message_id=None,
        categories=[],
    )
    assert re.fullmatch(r"[0-9a-f]{32}", ev["event_id"])


def test_single_send_timestamp_in_milliseconds(ctx):
    # Reference, "Example of Marketing Campaigns single send event": timestamp 1591726752372
    # is milliseconds; ``"category": []``.
    ev = only_event(ctx, load("singlesend_open_ms.json"))
    assert ev == expected(
        event_id="sendgrid_internal_event_id",
        event_type="open",
        provider_event_type="open",
        event_ts=datetime(2020, 6, 9, 18, 19, 12, 372000, tzinfo=timezone.utc),
        message_id="sendgrid_internal_message_id",
        categories=[],
    )


def test_ab_test_bare_object_with_stfilter_suffix(ctx):
    # Reference, "Example event from an A/B Test": a bare object (not an array) whose
    # sg_message_id carries ``.stfilter-015...``; the message part matches its smtp-id.
    ev = only_event(ctx, load("ab_test_processed.json"))
    assert ev == expected(
        event_id="qNOzbkTuTNCdxa1eXEpnXg",
        event_type="processed",
        provider_event_type="processed",
        event_ts=datetime(2015, 9, 15, 20, 44, 8, tzinfo=timezone.utc),
        message_id="5lFl7Fr1Rjme_EyzNNB_5A",
        email_hash=h("tadpole_0010@stbase-018.sjc1.sendgrid.net"),
        recipient_domain="stbase-018.sjc1.sendgrid.net",
        categories=[],
    )


def test_legacy_marketing_unsubscribe_without_ids(ctx):
    # Reference, "Example of Legacy Marketing unsubscribe": no sg_event_id, no message id.
    ev = only_event(ctx, load("legacy_marketing_unsubscribe.json"))
    ts = datetime(2013, 10, 3, 17, 47, 17, tzinfo=timezone.utc)
    assert ev == expected(
        event_id=deterministic_event_id(
            "sendgrid", None, "unsubscribe", h("nick@sendgrid.com"), ts
        ),
        event_type="unsubscribe",
        provider_event_type="unsubscribe",
        event_ts=ts,
        message_id=None,
        email_hash=h("nick@sendgrid.com"),
        recipient_domain="sendgrid.com",
        categories=["Tests", "Newsletter"],
    )


def test_anymail_processed_with_custom_args(ctx):
    # django-anymail tests/test_sendgrid_webhooks.py, test_processed_event.
    ev = only_event(ctx, load("anymail_processed.json"))
    assert ev == expected(
        event_id="ZyjAM5rnQmuI1KFInHQ3Nw",
        event_type="processed",
        provider_event_type="processed",
        event_ts=datetime(2016, 4, 19, 19, 47, 26, tzinfo=timezone.utc),
        message_id="wrfRRvF7Q0GgwUo2CvDmEA",
        email_hash=h("recipient@example.com"),
        categories=["tag1", "tag2"],
    )


def test_anymail_bounce(ctx):
    # django-anymail tests/test_sendgrid_webhooks.py, test_bounce_event.
    ev = only_event(ctx, load("anymail_bounce.json"))
    assert ev == expected(
        event_id="lC0Rc-FuQmKbnxCWxX1jRQ",
        event_type="bounce",
        provider_event_type="bounce",
        bounce_class="hard",
        event_ts=datetime(2016, 4, 19, 19, 47, 30, tzinfo=timezone.utc),
        message_id="Lli-03HcQ5-JLybO9fXsJg",
        email_hash=h("noreply@example.com"),
        categories=[],
        reason="550 5.1.1 The email account that you tried to reach does not exist.",
        smtp_status="5.1.1",
    )


def test_sg_message_id_without_message_part_falls_back_to_smtp_id(ctx):
    # django-anymail, test_dropped_invalid_event: ``"sg_message_id":
    # "filter0093p1las1.9128.5717FB8127.0"`` has no message part. The smtp-id gives the
    # same id the message's processed event carries (anymail_processed.json).
    dropped = only_event(ctx, load("anymail_dropped_invalid.json"))
    processed = only_event(ctx, load("anymail_processed.json"))
    assert dropped == expected(
        event_id="3NPOePGOTkeM_U3fgWApfg",
        event_type="dropped",
        provider_event_type="dropped",
        event_ts=datetime(2016, 4, 19, 19, 47, 30, tzinfo=timezone.utc),
        message_id="wrfRRvF7Q0GgwUo2CvDmEA",
        email_hash=h("invalid@invalid"),
        recipient_domain="invalid",
        categories=[],
        reason="Invalid",
    )
    assert dropped["message_id"] == processed["message_id"]


def test_batch_with_an_event_without_any_ids(ctx):
    # https://gist.github.com/martyndavies/8332929 (first three events): the dropped
    # event has no sg_event_id, no sg_message_id and an address SendGrid called invalid.
    res = normalize_bytes(load("batch_without_event_ids.json"), ctx)
    assert (res.records, len(res.events), res.dead_letters) == (3, 3, [])
    processed, dropped, delivered = res.events
    cats = ["category1", "category2", "category3"]
    assert processed == expected(
        event_id="VzcPxPv7SdWvUugt-xKymw",
        event_type="processed",
        provider_event_type="processed",
        event_ts=datetime(2013, 12, 10, 0, 41, 52, tzinfo=timezone.utc),
        message_id="142d9f3f351.7618.254f56",
        email_hash=h("john.doe@sendgrid.com"),
        recipient_domain="sendgrid.com",
        categories=cats,
    )
    ts = datetime(2013, 12, 10, 0, 41, 55, tzinfo=timezone.utc)
    assert dropped == expected(
        event_id=deterministic_event_id(
            "sendgrid", "4FB29F5D.5080404", "dropped", h("not an email address"), ts
        ),
        event_type="dropped",
        provider_event_type="dropped",
        event_ts=ts,
        message_id="4FB29F5D.5080404",
        email_hash=h("not an email address"),
        recipient_domain=None,
        categories=cats,
        reason="Invalid",
    )
    assert delivered["message_id"] == processed["message_id"]
    assert delivered["event_id"] == "vZL1Dhx34srS-HkO-gTXBLg"


# --- quirks, one aspect at a time ----------------------------------------------------


def _delivered(**changes) -> dict:
    item = json.loads(load("delivered.json"))[0]
    for k, v in changes.items():
        if v is _DROP:
            item.pop(k, None)
        else:
            item[k] = v
    return item


_DROP = object()


@pytest.mark.parametrize(
    "category, want",
    [
        ("cat facts", ["cat facts"]),
        (["newuser", "transactional"], ["newuser", "transactional"]),
        ([], []),
        (_DROP, []),
        ([" spaced ", "spaced", "", None, 7], ["spaced", "7"]),
    ],
)
def test_category_string_or_array(ctx, category, want):
    ev = only_event(ctx, json.dumps([_delivered(category=category)]).encode())
    assert ev["categories"] == want


@pytest.mark.parametrize(
    "timestamp, want",
    [
        (1513299569, DOC_TS),
        ("1513299569", DOC_TS),
        (" 1513299569 ", DOC_TS),
        (1513299569000, DOC_TS),
        ("1513299569000", DOC_TS),
        (1513299569.25, DOC_TS.replace(microsecond=250000)),
        ("1513299569.25", DOC_TS.replace(microsecond=250000)),
    ],
)
def test_timestamp_int_string_or_milliseconds(ctx, timestamp, want):
    ev = only_event(ctx, json.dumps([_delivered(timestamp=timestamp)]).encode())
    assert ev["event_ts"] == want and ev["event_ts"].tzinfo is timezone.utc
    assert ev["event_date"] == date(2017, 12, 15)


@pytest.mark.parametrize(
    "word, want",
    [
        ("DELIVERED", "delivered"),
        (" Delivered ", "delivered"),
        ("Bounce", "bounce"),
        ("GROUP_UNSUBSCRIBE", "group_unsubscribe"),
        ("SpamReport", "spamreport"),
        # The reference's own property table spells it "spam report".
        ("spam report", "spamreport"),
    ],
)
def test_event_name_in_any_case(ctx, word, want):
    ev = only_event(ctx, json.dumps([_delivered(event=word)]).encode())
    assert ev["event_type"] == want
    assert ev["provider_event_type"] == word.strip()


def test_custom_args_at_top_level_do_not_leak_into_the_event(ctx):
    item = _delivered(
        userid="1123", template="welcome", purchase="PO1452297845", unique_args={"x": "y"}
    )
    ev = only_event(ctx, json.dumps([item]).encode())
    assert set(ev) == set(FIELD_NAMES)
    assert ev == only_event(ctx, load("delivered.json"))


@pytest.mark.parametrize(
    "sg_message_id, smtp_id, want",
    [
        ("  14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0  ", _DROP, DOC_MESSAGE_ID),
        ("14c5d75ce93.dfd.64b469", _DROP, DOC_MESSAGE_ID),  # no filter suffix
        ("142d9f3f351.7618.254f56.filter-147.22649.52A663508.0", _DROP, "142d9f3f351.7618.254f56"),
        (_DROP, "<14c5d75ce93.dfd.64b469@ismtpd-555>", DOC_MESSAGE_ID),  # smtp-id fallback
        ("", " <14c5d75ce93.dfd.64b469@ismtpd-555> ", DOC_MESSAGE_ID),
        ("filter0093p1las1.9128.5717FB8127.0", _DROP, "filter0093p1las1.9128.5717FB8127.0"),
        (_DROP, "", None),
        (_DROP, _DROP, None),
    ],
)
def test_message_id_normalisation(ctx, sg_message_id, smtp_id, want):
    item = _delivered(**{"sg_message_id": sg_message_id, "smtp-id": smtp_id})
    assert only_event(ctx, json.dumps([item]).encode())["message_id"] == want


def test_missing_sg_event_id_gets_a_deterministic_id(ctx):
    base = _delivered(sg_event_id=_DROP)
    first = only_event(ctx, json.dumps([base]).encode())
    again = only_event(ctx, json.dumps([copy.deepcopy(base)]).encode())
    assert re.fullmatch(r"[0-9a-f]{32}", first["event_id"])
    assert first["event_id"] == again["event_id"]  # a retried post gets the same id
    others = [
        _delivered(sg_event_id=_DROP, timestamp=1513299570),
        _delivered(sg_event_id=_DROP, email="sam@example.com"),
        _delivered(sg_event_id=_DROP, event="open"),
        _delivered(sg_event_id=_DROP, sg_message_id="other.filter0001.1"),
        dict(_delivered(sg_event_id=_DROP), event="click", url="http://a.example/"),
    ]
    ids = {first["event_id"]}
    for other in others:
        ids.add(only_event(ctx, json.dumps([other]).encode())["event_id"])
    click2 = dict(_delivered(sg_event_id=_DROP), event="click", url="http://b.example/")
    ids.add(only_event(ctx, json.dumps([click2]).encode())["event_id"])
    assert len(ids) == len(others) + 2
    # An empty sg_event_id is as good as none.
    assert (
        only_event(ctx, json.dumps([_delivered(sg_event_id="  ")]).encode())["event_id"]
        == first["event_id"]
    )


def test_address_is_trimmed_and_lower_cased_before_hashing(ctx):
    ev = only_event(ctx, json.dumps([_delivered(email="  Alex@Example.COM ")]).encode())
    assert ev["email_hash"] == h("alex@example.com")
    assert ev["recipient_domain"] == "example.com"


@pytest.mark.parametrize(
    "btype, want",
    [("bounce", "hard"), ("blocked", "block"), ("Blocked", "block"), (_DROP, "hard"), ("", "hard")],
)
def test_bounce_class_from_type(ctx, btype, want):
    ev = only_event(ctx, json.dumps([_delivered(event="bounce", type=btype)]).encode())
    assert ev["bounce_class"] == want


def test_bounce_class_is_null_for_other_events(ctx):
    ev = only_event(ctx, json.dumps([_delivered(type="blocked")]).encode())
    assert ev["bounce_class"] is None


def test_attempt_given_as_a_number(ctx):
    ev = only_event(ctx, json.dumps([_delivered(event="deferred", attempt=3)]).encode())
    assert ev["attempt"] == "3"


def test_addresses_in_reason_and_url_are_redacted(ctx):
    item = _delivered(
        event="bounce",
        reason="550 5.1.1 <alex@example.com>: Recipient address rejected",
        response=_DROP,
    )
    click = _delivered(
        event="click", url="https://shop.example/r?to=alex%40example.com&u=alex@example.com"
    )
    res = sg(ctx, [item, click])
    bounce, clicked = res.events
    assert bounce["reason"] == "550 5.1.1 <[redacted]@example.com>: Recipient address rejected"
    assert (
        clicked["url"]
        == "https://shop.example/r?to=[redacted]%40example.com&u=[redacted]@example.com"
    )
    assert "alex" not in json.dumps([bounce["reason"], clicked["url"]])


def test_empty_post_body_is_a_record_without_events(ctx):
    res = normalize_bytes(b"[]", ctx)
    assert (res.records, res.events, res.dead_letters, res.without_event) == (1, [], [], 1)


def test_bad_batch_items_become_precise_dead_letters(ctx):
    good = _delivered()
    items = [
        good,
        5,
        "processed",
        None,
        {"email": "alex@example.com", "timestamp": 1513299569},
        {"event": "open", "email": "alex@example.com"},
        {"event": "open", "email": "alex@example.com", "timestamp": "soon"},
        {"event": "open", "email": "alex@example.com", "timestamp": -5},
        {"event": "open", "email": "alex@example.com", "timestamp": 10**400},
        {"event": "open", "timestamp": 1513299569},
        {"event": "open", "email": ["alex@example.com"], "timestamp": 1513299569},
        {"event": "", "email": "alex@example.com", "timestamp": 1513299569},
        good,
    ]
    # 10**400 is valid JSON that orjson refuses; the stdlib fallback reads it.
    res = normalize_bytes(json.dumps(items).encode(), ctx)
    assert len(res.events) == 2 and res.without_event == 0
    assert res.records == len(items) == len(res.events) + len(res.dead_letters)
    got = [(d.record_index, d.reason) for d in res.dead_letters]
    assert got == [
        (1, "batch item 1 is not an event object"),
        (2, "batch item 2 is not an event object"),
        (3, "batch item 3 is not an event object"),
        (4, "missing event name"),
        (5, "'open' event: missing timestamp"),
        (6, "'open' event: unreadable timestamp 'soon'"),
        (7, "'open' event: timestamp out of range: 1969-12-31T23:59:55+00:00"),
        (8, "'open' event: timestamp out of range: 1000000000000000000000000000000000000..."),
        (9, "'open' event: missing recipient address"),
        (10, "'open' event: missing recipient address"),
        (11, "missing event name"),
    ]
    for d in res.dead_letters:
        assert d.provider == "sendgrid" and d.source_uri == "test://payload" and d.line == 1
        assert d.raw  # the item's own text, to fix and replay
    assert json.loads(res.dead_letters[4].raw) == items[5]


def test_a_bare_event_dead_letter_keeps_the_raw_line(ctx):
    raw = b'{"event": "open", "email": "alex@example.com", "timestamp": "later"}'
    res = normalize_record(RawRecord(7, raw, json.loads(raw), None), ctx)
    (dl,) = res.dead_letters
    assert (dl.line, dl.record_index, dl.provider) == (7, 0, "sendgrid")
    assert dl.reason == "'open' event: unreadable timestamp 'later'"
    assert json.loads(dl.raw) == json.loads(raw)


def test_events_after_the_partitionable_range_are_dead_letters(ctx):
    # BigQuery DATE partitions end on 2159-12-31; later rows would land in
    # __UNPARTITIONED__, out of reach of per-partition recomputes.
    end = int(datetime(2160, 1, 1, tzinfo=timezone.utc).timestamp())
    ok = only_event(ctx, json.dumps([_delivered(timestamp=end - 1)]).encode())
    assert ok["event_date"] == date(2159, 12, 31)
    res = sg(ctx, [_delivered(timestamp=end)])
    assert [d.reason for d in res.dead_letters] == [
        "'delivered' event: timestamp out of range: 2160-01-01T00:00:00+00:00"
    ]


def test_epoch_start_is_accepted(ctx):
    ev = only_event(ctx, json.dumps([_delivered(timestamp=0)]).encode())
    assert ev["event_ts"] == datetime(1970, 1, 1, tzinfo=timezone.utc)
