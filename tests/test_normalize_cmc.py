"""Customers Mail Cloud webhooks -> canonical events.

Real payloads: the five bodies in provider-samples/cmc/ (a public write-up of CMC's
webhooks; loaded from conftest.SAMPLES) and the API v1 / v2 Event Webhook reference
examples in tests/payloads/cmc/ (SOURCES.md there). Bodies the documentation does not
publish in full (v1 bounces, blocks, deferrals, other status codes) are built from the
documented field names; each such test says so.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import SAMPLES, TEST_HASH_KEY

from pipelines.events import FIELD_NAMES, deterministic_event_id
from pipelines.normalizers import NormalizeSettings, normalize_bytes, normalize_document

CMC_SAMPLES = SAMPLES / "cmc"
PAYLOADS = Path(__file__).resolve().parent / "payloads" / "cmc"
UTC = timezone.utc
GMAIL_550 = (
    "550 5.1.1 The email account that you tried to reach does not exist. Please try "
    "5.1.1 double-checking the recipient's email address for typos or 5.1.1 unnecessary "
    "spaces. Learn more at 5.1.1  <https://support.google.com/mail/?p=NoSuchUser> "
    "b197-20020a621bce000000b0058b80756b07si311029pfb.3 - gsmtp (in reply to RCPT TO)"
)


def h(address: str) -> str:
    return hmac.new(
        TEST_HASH_KEY.encode(), address.strip().lower().encode(), hashlib.sha256
    ).hexdigest()


def expected(*, ts: datetime, mid: str, to: str, provider_event_type: str, **fields) -> dict:
    ev = {
        "event_id": deterministic_event_id("cmc", mid, provider_event_type, h(to), ts),
        "provider": "cmc",
        "event_type": None,
        "provider_event_type": provider_event_type,
        "bounce_class": None,
        "event_ts": ts,
        "event_date": ts.date(),
        "message_id": mid,
        "email_hash": h(to),
        "recipient_domain": to.rsplit("@", 1)[1],
        "categories": [],
        "reason": None,
        "smtp_status": None,
        "url": None,
        "attempt": None,
        "source_uri": "test://payload",
        "ingested_at": None,
    }
    ev.update(fields)
    return ev


def events_of(ctx, data: bytes, n: int) -> list[dict]:
    res = normalize_bytes(data, ctx)
    assert res.dead_letters == [], [d.reason for d in res.dead_letters]
    assert (res.records, len(res.events), res.without_event) == (n, n, 0)
    for ev in res.events:
        assert set(ev) == set(FIELD_NAMES)
    return res.events


def sample(name: str) -> bytes:
    return (CMC_SAMPLES / name).read_bytes()


def body(kind: str, *items: dict) -> bytes:
    return json.dumps(
        {"event_type": kind, "server_composition": "pro", "event": {kind: list(items)}}
    ).encode()


# --- the five real bodies ------------------------------------------------------------


def test_deliveries_queued(ctx):
    (ev,) = events_of(ctx, sample("deliveries_queued.json"), 1)
    assert ev == expected(
        ts=datetime(2023, 1, 25, 5, 3, 6, tzinfo=UTC),
        mid="031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com",
        to="user@example.jp",
        provider_event_type="deliveries.queued",
        event_type="processed",
    )


def test_deliveries_succeeded(ctx):
    (ev,) = events_of(ctx, sample("deliveries_succeeded.json"), 1)
    assert ev == expected(
        ts=datetime(2023, 1, 25, 5, 3, 9, tzinfo=UTC),
        mid="031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com",
        to="user@example.jp",
        provider_event_type="deliveries.succeeded",
        event_type="delivered",
    )


def test_deliveries_failed(ctx):
    # Classified by the SMTP code in the reason: 5.1.1 is permanent.
    (ev,) = events_of(ctx, sample("deliveries_failed.json"), 1)
    assert ev == expected(
        ts=datetime(2023, 1, 25, 5, 6, 6, tzinfo=UTC),
        mid="9e7e564c-ac83-8cd8-2cb4-b9ff2a9f168d@example.com",
        to="no-user@example.jp",
        provider_event_type="deliveries.failed",
        event_type="bounce",
        bounce_class="hard",
        reason=GMAIL_550,
    )


def test_bounces_user_unknown(ctx):
    (ev,) = events_of(ctx, sample("bounces_user_unknown.json"), 1)
    assert ev == expected(
        ts=datetime(2023, 1, 25, 5, 6, 7, tzinfo=UTC),
        mid="9e7e564c-ac83-8cd8-2cb4-b9ff2a9f168d@example.com",
        to="no-user@example.jp",
        provider_event_type="bounces",
        event_type="bounce",
        bounce_class="hard",
        reason=GMAIL_550,
        smtp_status="2",
    )


def test_bounces_host_unknown(ctx):
    # ``"to": "user@example"``: a domain without a dot is still the domain.
    (ev,) = events_of(ctx, sample("bounces_host_unknown.json"), 1)
    assert ev == expected(
        ts=datetime(2023, 1, 25, 5, 5, 15, tzinfo=UTC),
        mid="8f902ee7-ae65-8711-48a8-2f708cb14205@example.com",
        to="user@example",
        provider_event_type="bounces",
        event_type="bounce",
        bounce_class="hard",
        reason="host unknown",
        smtp_status="1",
    )


def test_failed_delivery_and_its_bounce_are_two_events_for_one_recipient(ctx):
    # CMC reports one failure twice (deliveries/failed, then bounces a second later).
    # Both are kept, with their own ids; they share message_id and email_hash so the
    # outcomes count the (message, recipient) once.
    (failed,) = events_of(ctx, sample("deliveries_failed.json"), 1)
    (bounce,) = events_of(ctx, sample("bounces_user_unknown.json"), 1)
    assert failed["event_type"] == bounce["event_type"] == "bounce"
    assert failed["message_id"] == bounce["message_id"]
    assert failed["email_hash"] == bounce["email_hash"]
    assert failed["event_id"] != bounce["event_id"]
    # ... and a re-sent body gives the same ids (no provider id: built from content).
    (again,) = events_of(ctx, sample("deliveries_failed.json"), 1)
    assert again["event_id"] == failed["event_id"]


# --- API v1 / v2 reference examples --------------------------------------------------


def test_api_v1_field_names(ctx):
    # https://smtps.jp/docs/apiv1/webhook/event/ : envelopeFrom / envelopeTo, and the
    # message id escaped as \u003C...\u003E in the JSON text.
    raw = (PAYLOADS / "v1_deliveries.json").read_bytes()
    assert b"\\u003C823cb160" in raw
    queued, succeeded = events_of(ctx, raw, 2)
    mid = "823cb160-a205-11e5-833e-06ff9846521b@node1"
    assert queued == expected(
        ts=datetime(2015, 12, 14, 1, 53, 52, tzinfo=UTC),
        mid=mid,
        to="to1@example.com",
        provider_event_type="deliveries.queued",
        event_type="processed",
    )
    assert succeeded == expected(
        ts=datetime(2015, 12, 14, 1, 53, 53, tzinfo=UTC),
        mid=mid,
        to="to1@example.com",
        provider_event_type="deliveries.succeeded",
        event_type="delivered",
    )


def test_api_v2_reads_the_same_as_v1(ctx):
    # https://smtps.jp/docs-en/apiv2/webhook/event/ : the same two events in v2 names.
    v1 = events_of(ctx, (PAYLOADS / "v1_deliveries.json").read_bytes(), 2)
    v2 = events_of(ctx, (PAYLOADS / "v2_deliveries.json").read_bytes(), 2)
    assert v1 == v2


def test_cmc_category_field(hasher):
    # The v2 example carries ``"apiData": "CMC00123"``; configured, it is the category.
    raw = (PAYLOADS / "v2_deliveries.json").read_bytes()
    ctx = NormalizeSettings(hasher=hasher, cmc_category_field="apiData")
    res = normalize_bytes(raw, ctx)
    assert [e["categories"] for e in res.events] == [["CMC00123"], ["CMC00123"]]
    # Unconfigured: empty. Configured but empty ("apiData": "" in the samples): empty.
    assert [
        e["categories"] for e in normalize_bytes(raw, NormalizeSettings(hasher=hasher)).events
    ] == [[], []]
    res = normalize_bytes(sample("deliveries_queued.json"), ctx)
    assert res.events[0]["categories"] == []


def test_v1_bounce_built_from_documented_field_names(ctx):
    # Built: the v1 reference names recipients envelopeTo; the bounce fields (created,
    # messageId, reason, status) are those of the published bodies.
    item = {
        "created": "2015-12-14 10:54:10",
        "envelopeFrom": "from1@example.com",
        "envelopeTo": "to1@example.com",
        "messageId": "\u003c823cb160-a205-11e5-833e-06ff9846521b@node1\u003e",
        "reason": "550 5.1.1 <to1@example.com>: Recipient address rejected: User unknown",
        "status": "2",
        "subject": "sample email #1",
    }
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert ev == expected(
        ts=datetime(2015, 12, 14, 1, 54, 10, tzinfo=UTC),
        mid="823cb160-a205-11e5-833e-06ff9846521b@node1",
        to="to1@example.com",
        provider_event_type="bounces",
        event_type="bounce",
        bounce_class="hard",
        smtp_status="2",
        # the quoted recipient is redacted
        reason="550 5.1.1 <[redacted]@example.com>: Recipient address rejected: User unknown",
    )


def test_message_id_escapes_left_as_text_are_stripped(ctx):
    # A relay that escaped the body twice leaves the six characters \u003C in the text.
    item = json.loads(sample("deliveries_queued.json"))["event"]["deliveries"][0]
    item["messageId"] = "\\u003C031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com\\u003E"
    (ev,) = events_of(ctx, body("deliveries", item), 1)
    assert ev["message_id"] == "031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com"


# --- time zones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "created, want",
    [
        ("2023-01-25 14:05:15", datetime(2023, 1, 25, 5, 5, 15, tzinfo=UTC)),
        # Before 09:00 in Japan is the previous UTC day: event_date follows UTC.
        ("2023-01-25 08:59:59", datetime(2023, 1, 24, 23, 59, 59, tzinfo=UTC)),
        ("2023/01/25 14:05:15", datetime(2023, 1, 25, 5, 5, 15, tzinfo=UTC)),
        # ISO without an offset is local time as well; with an offset it keeps it.
        ("2023-01-25T14:05:15", datetime(2023, 1, 25, 5, 5, 15, tzinfo=UTC)),
        ("2023-01-25T14:05:15+00:00", datetime(2023, 1, 25, 14, 5, 15, tzinfo=UTC)),
        ("2023-01-25T14:05:15Z", datetime(2023, 1, 25, 14, 5, 15, tzinfo=UTC)),
    ],
)
def test_created_is_japan_time(ctx, created, want):
    item = dict(
        json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0], created=created
    )
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert ev["event_ts"] == want and ev["event_ts"].tzinfo == UTC
    assert ev["event_date"] == want.date()


@pytest.mark.parametrize(
    "zone, created, want",
    [
        ("America/New_York", "2023-01-25 14:05:15", datetime(2023, 1, 25, 19, 5, 15, tzinfo=UTC)),
        (
            "America/New_York",
            "2023-07-01 14:05:15",
            datetime(2023, 7, 1, 18, 5, 15, tzinfo=UTC),
        ),  # DST
        ("UTC", "2023-01-25 14:05:15", datetime(2023, 1, 25, 14, 5, 15, tzinfo=UTC)),
    ],
)
def test_created_in_a_configured_zone(hasher, zone, created, want):
    # CMC's console lets a customer choose the zone of event times.
    ctx = NormalizeSettings(hasher=hasher, cmc_timezone=zone)
    item = dict(
        json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0], created=created
    )
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert ev["event_ts"] == want


def test_the_zone_changes_the_id_only_through_the_time(hasher):
    tokyo = normalize_bytes(sample("bounces_host_unknown.json"), NormalizeSettings(hasher=hasher))
    utc = normalize_bytes(
        sample("bounces_host_unknown.json"), NormalizeSettings(hasher=hasher, cmc_timezone="UTC")
    )
    assert tokyo.events[0]["event_ts"] != utc.events[0]["event_ts"]
    assert tokyo.events[0]["event_id"] != utc.events[0]["event_id"]


# --- bounce status codes -------------------------------------------------------------

#: From the documented meanings (provider-samples/README.md).
DOCUMENTED = [
    ("1", "hard"),  # unknown host
    ("2", "hard"),  # unknown user
    ("3", "soft"),  # retransmission timeout
    ("4", "block"),  # rejected by the receiver's policy
    ("5", "soft"),  # over capacity
    ("6", "soft"),  # forward error
    ("7", "soft"),  # receiving server error
    ("8", "soft"),  # oversized
    ("99", "hard"),  # other permanent error
    # 9, 10, 11 are drops: test_never_sent_statuses_are_drops below
]


@pytest.mark.parametrize(
    "status, want",
    DOCUMENTED
    + [
        (2, "hard"),
        ("02", "hard"),
        (" 4 ", "block"),
        (99.0, "hard"),
        # Unknown codes are kept (smtp_status) and undetermined, never an error.
        ("12", "undetermined"),
        ("0", "undetermined"),
        ("100", "undetermined"),
        ("X1", "undetermined"),
        ("", "undetermined"),
    ],
)
def test_bounce_status_codes(ctx, status, want):
    # Built: the real host-unknown body with its status replaced.
    item = dict(
        json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0], status=status
    )
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert ev["event_type"] == "bounce"
    assert ev["bounce_class"] == want
    given = str(status).strip() if str(status).strip() else None
    assert ev["smtp_status"] == given


#: CMC error statuses for mail it never handed to a server -> SendGrid's drop reason
#: (what queries/delivery_outcomes classifies as bounce_drops / unsubscribe_drops /
#: invalid_emails).
NEVER_SENT = [
    ("10", "blocked address", "Bounced Address: blocked address"),
    ("11", "unsubscribed address", "Unsubscribed Address: unsubscribed address"),
    ("9", "address format error", "Invalid Address: address format error"),
]


@pytest.mark.parametrize("status, cmc_reason, reason", NEVER_SENT)
def test_never_sent_statuses_are_drops(ctx, status, cmc_reason, reason):
    # Built: the real host-unknown body with the documented status and its meaning as
    # the reason (CMC does not publish the reason text of these codes).
    item = dict(
        json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0],
        status=status,
        reason=cmc_reason,
        to="blocked.user@example.jp",
    )
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert ev == expected(
        ts=datetime(2023, 1, 25, 5, 5, 15, tzinfo=UTC),
        mid="8f902ee7-ae65-8711-48a8-2f708cb14205@example.com",
        to="blocked.user@example.jp",
        provider_event_type="bounces",
        event_type="dropped",
        bounce_class=None,
        reason=reason,
        smtp_status=status,
    )


@pytest.mark.parametrize(
    "status, want",
    [
        (10, "Bounced Address"),
        ("010", "Bounced Address"),
        (" 11 ", "Unsubscribed Address"),
        (9.0, "Invalid Address"),
    ],
)
def test_never_sent_status_in_other_spellings_and_without_a_reason(ctx, status, want):
    item = dict(
        json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0],
        status=status,
        reason="",
    )
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert (ev["event_type"], ev["bounce_class"], ev["reason"], ev["smtp_status"]) == (
        "dropped",
        None,
        want,
        str(status).strip(),
    )


def test_never_sent_reason_quoting_the_recipient_is_redacted(ctx):
    item = dict(
        json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0],
        status="11",
        reason="unsubscribed: user@example.jp",
    )
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert ev["reason"] == "Unsubscribed Address: unsubscribed: [redacted]@example.jp"


def test_bounce_without_status_is_undetermined(ctx):
    item = json.loads(sample("bounces_host_unknown.json"))["event"]["bounces"][0]
    del item["status"]
    (ev,) = events_of(ctx, body("bounces", item), 1)
    assert (ev["bounce_class"], ev["smtp_status"]) == ("undetermined", None)


# --- deliveries statuses, blocks -----------------------------------------------------


def _delivery(**changes) -> dict:
    item = json.loads(sample("deliveries_queued.json"))["event"]["deliveries"][0]
    item.update(changes)
    return item


def test_deliveries_deferred(ctx):
    # Built: the real queued body with status deferred and a 4xx reason.
    item = _delivery(
        status="deferred",
        created="2023-01-25 14:10:00",
        reason="421 4.7.0 Try again later, closing connection.",
    )
    (ev,) = events_of(ctx, body("deliveries", item), 1)
    ts = datetime(2023, 1, 25, 5, 10, tzinfo=UTC)
    assert ev == expected(
        ts=ts,
        mid="031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com",
        to="user@example.jp",
        provider_event_type="deliveries.deferred",
        event_type="deferred",
        reason="421 4.7.0 Try again later, closing connection.",
    )


@pytest.mark.parametrize(
    "reason, want",
    [
        ("550 5.1.1 user unknown", "hard"),
        ("452 4.2.2 mailbox full", "soft"),
        ("554 rejected", "hard"),
        ("connection timed out", "undetermined"),
        ("", "undetermined"),
    ],
)
def test_failed_delivery_class_from_the_reason(ctx, reason, want):
    (ev,) = events_of(ctx, body("deliveries", _delivery(status="failed", reason=reason)), 1)
    assert (ev["event_type"], ev["bounce_class"]) == ("bounce", want)


def test_unknown_delivery_status_is_an_unknown_event(ctx):
    (ev,) = events_of(ctx, body("deliveries", _delivery(status="expired")), 1)
    assert (ev["event_type"], ev["provider_event_type"]) == ("unknown", "deliveries.expired")


def test_blocks(ctx):
    # Built: CMC does not publish a blocks webhook body; fields as in the v2 bodies.
    item = {
        "created": "2023-01-25 15:00:00",
        "returnPath": "info@return.pro.smtps.jp",
        "from": "info@example.com",
        "to": "no-user@example.jp",
        "messageId": "<9e7e564c-ac83-8cd8-2cb4-b9ff2a9f168d@example.com>",
        "reason": "blocked",
        "status": "10",
        "subject": "test",
        "apiData": "",
    }
    (ev,) = events_of(ctx, body("blocks", item), 1)
    # status 10 (blocked after earlier errors): SendGrid's "Bounced Address" drop
    assert ev == expected(
        ts=datetime(2023, 1, 25, 6, 0, tzinfo=UTC),
        mid="9e7e564c-ac83-8cd8-2cb4-b9ff2a9f168d@example.com",
        to="no-user@example.jp",
        provider_event_type="blocks",
        event_type="dropped",
        reason="Bounced Address: blocked",
        smtp_status="10",
    )


def test_blocks_with_the_blocks_api_field_name(ctx):
    # The Blocks API (https://smtps.jp/docs-en/apiv2/te/blocks) names the address "email".
    item = {"created": "2015-12-14 08:46:00", "email": "to1@example.com", "status": "2"}
    (ev,) = events_of(ctx, body("blocks", item), 1)
    assert ev["email_hash"] == h("to1@example.com") and ev["event_type"] == "dropped"


# --- batches and bad bodies ----------------------------------------------------------


def test_batch_of_several_events(ctx):
    items = [
        _delivery(),
        _delivery(status="succeeded", created="2023-01-25 14:03:09"),
        _delivery(status="succeeded", to="other@example.co.jp"),
    ]
    evs = events_of(ctx, body("deliveries", *items), 3)
    assert [e["event_type"] for e in evs] == ["processed", "delivered", "delivered"]
    assert evs[2]["recipient_domain"] == "example.co.jp"
    assert len({e["event_id"] for e in evs}) == 3


def test_empty_batch_is_a_record_without_events(ctx):
    res = normalize_bytes(body("deliveries"), ctx)
    assert (res.records, res.events, res.dead_letters, res.without_event) == (1, [], [], 1)


def test_bad_items_become_precise_dead_letters(ctx):
    items = [
        _delivery(),
        "not an object",
        _delivery(created=""),
        _delivery(created="25/01/2023"),
        _delivery(created="0001-01-01 00:00:00"),
        _delivery(to="", envelopeTo=None),
        _delivery(to=["user@example.jp"]),
        _delivery(),
    ]
    res = normalize_bytes(body("deliveries", *items), ctx)
    assert len(res.events) == 2 and res.records == len(items)
    assert [(d.record_index, d.reason) for d in res.dead_letters] == [
        (1, "batch item 1 is not an event object"),
        (2, "deliveries event 2: missing created time"),
        (
            3,
            "deliveries event 3: unreadable created time '25/01/2023' (expected YYYY-MM-DD HH:MM:SS)",
        ),
        (4, "deliveries event 4: created time out of range: '0001-01-01 00:00:00'"),
        (5, "deliveries event 5: missing recipient address"),
        (6, "deliveries event 6: recipient address is a list, not a string"),
    ]
    assert all(d.provider == "cmc" and d.raw for d in res.dead_letters)


@pytest.mark.parametrize(
    "doc, reason",
    [
        (
            {"event_type": "deliveries", "event": {}},
            "CMC body has no 'deliveries' event list under 'event' (keys: [])",
        ),
        (
            {"event_type": "deliveries", "event": {"a": [], "b": []}},
            "CMC body has no 'deliveries' event list under 'event' (keys: [a, b])",
        ),
        (
            {"event_type": None, "event": {"x": 1}},
            "CMC body has no event_type (deliveries, bounces or blocks)",
        ),
    ],
)
def test_bad_bodies_are_dead_letters(ctx, doc, reason):
    res = normalize_document(doc, ctx)
    assert [d.reason for d in res.dead_letters] == [reason] and res.records == 1


def test_list_under_another_key_or_a_single_object_is_tolerated(ctx):
    item = _delivery()
    under_other = {"event_type": "deliveries", "event": {"delivery": [item]}}
    single = {"event_type": "deliveries", "event": {"deliveries": item}}
    for doc in (under_other, single):
        res = normalize_document(copy.deepcopy(doc), ctx)
        assert [e["event_type"] for e in res.events] == ["processed"]


def test_event_type_in_another_case(ctx):
    doc = json.loads(sample("bounces_host_unknown.json"))
    doc["event_type"] = "Bounces"
    doc["event"] = {"Bounces": doc["event"]["bounces"]}
    (ev,) = normalize_document(doc, ctx).events
    assert (ev["event_type"], ev["provider_event_type"], ev["bounce_class"]) == (
        "bounce",
        "Bounces",
        "hard",
    )


def test_event_date_is_a_date(ctx):
    (ev,) = events_of(ctx, sample("deliveries_queued.json"), 1)
    assert type(ev["event_date"]) is date


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipelines.normalizers.cmc import _fast_local  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\A[0-9]{4}[-/][0-9]{2}[-/][0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z")
    | st.text(max_size=20)
)
def test_fast_created_parse_agrees_with_strptime(v):
    """The strptime-free parse of `created` gives exactly strptime's answer, or defers."""
    fast = _fast_local(v)
    expected = None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S"):
        try:
            expected = datetime.strptime(v, fmt)
            break
        except ValueError:
            continue
    if fast is not None:
        assert fast == expected
    elif expected is not None:
        # deferring is allowed only for shapes the fast path does not take
        assert not (len(v) == 19 and v[4] == v[7] and v[4] in "-/")
