"""Property tests: SES-shaped JSON with random values never breaks the SES normalizer.

For any record shaped like SES's (known or unknown event names, fields present, missing or
of the wrong JSON type, in any envelope), the normalizer returns instead of raising, every
record is accounted for (events + dead letters + records without an event), and every event
is well typed: it fits the canonical Arrow schema and serialises to JSON. Example counts
are modest so the file runs in seconds.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

import orjson
from conftest import TEST_HASH_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.events import (
    BOUNCE_CLASSES,
    EVENT_TYPES,
    FIELD_NAMES,
    event_to_json,
    events_to_arrow,
)
from pipelines.hashing import EmailHasher
from pipelines.normalizers import NormalizeSettings, base, normalize_bytes, normalize_document, ses
from pipelines.records import parse_json

CTX = NormalizeSettings(
    hasher=EmailHasher(TEST_HASH_KEY), source_uri="prop://ses", ses_category_tag="category"
)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------- strategies

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_any = st.recursive(
    json_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)

#: Addresses whose local part is recognisable, so a leak into reason/url can be spotted.
address = st.builds(
    lambda n, d, name: f'"{name}" <zq{n}@{d}>' if name else f"zq{n}@{d}",
    st.integers(0, 10**6),
    st.sampled_from(["example.com", "Example.ORG", "mail.example.co.jp"]),
    st.sampled_from(["", "Jane Doe"]),
)

iso_ts = st.builds(
    lambda dt, fmt: dt.strftime(fmt),
    st.datetimes(
        min_value=datetime(1980, 1, 1),
        max_value=datetime(2210, 1, 1),
        timezones=st.sampled_from(
            [timezone.utc, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5))]
        ),
    ),
    st.sampled_from(
        ["%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d"]
    ),
)
#: What a broken timestamp looks like: offsets that overflow, text, numbers, anything.
timestamp = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "1970-01-01T00:00:00Z",
            "yesterday",
            "",
        ]
    ),
    json_leaf,
)

_ABSENT = object()


def sometimes_broken(draw, good, *, bad=None):
    """Mostly a sensible value; about one draw in ten absent or any JSON value at all.
    (The bad branch is a middle value, not an end of the range, which Hypothesis favours.)"""
    if draw(st.integers(0, 9)) == 4:
        return draw(bad if bad is not None else st.one_of(st.just(_ABSENT), json_any))
    return draw(good)


def put(doc: dict, key: str, value) -> None:
    if value is not _ABSENT:
        doc[key] = value


diagnostic = st.one_of(
    st.text(max_size=20), address.map(lambda a: f"smtp; 550 5.1.1 <{a}>... User unknown")
)


@st.composite
def recipient_entry(draw):
    if draw(st.integers(0, 9)) == 4:  # a bare address (delivery.recipients) or junk
        return draw(st.one_of(address, json_leaf))
    entry: dict = {}
    put(entry, "emailAddress", sometimes_broken(draw, address))
    put(entry, "status", sometimes_broken(draw, st.sampled_from(["5.1.1", "4.4.1", " 4.2.2 "])))
    put(entry, "diagnosticCode", sometimes_broken(draw, diagnostic))
    return entry


@st.composite
def mail(draw):
    m: dict = {}
    put(m, "timestamp", sometimes_broken(draw, iso_ts, bad=timestamp))
    put(m, "messageId", sometimes_broken(draw, st.text(min_size=1, max_size=20)))
    put(
        m,
        "destination",
        sometimes_broken(
            draw, st.lists(st.one_of(address, address, address, json_leaf), min_size=1, max_size=4)
        ),
    )
    put(
        m,
        "tags",
        sometimes_broken(
            draw,
            st.dictionaries(
                st.sampled_from(["category", "ses:configuration-set", "other"]),
                st.one_of(
                    st.lists(
                        st.one_of(st.text(max_size=8), st.text(max_size=8), json_leaf), max_size=3
                    ),
                    json_leaf,
                ),
                max_size=3,
            ),
        ),
    )
    return m


@st.composite
def ses_record(draw):
    word = sometimes_broken(
        draw,
        st.sampled_from(sorted(ses.EVENT_MAP)),
        bad=st.one_of(
            st.sampled_from(["AmazonSnsSubscriptionSucceeded", "Received", " Bounce ", "bounce"]),
            json_leaf,
        ),
    )
    field = draw(st.sampled_from(["eventType", "notificationType"]))
    doc = {field: word}
    put(doc, "mail", sometimes_broken(draw, mail()))
    name = word.strip() if isinstance(word, str) else "x"
    key = ses.PAYLOAD_KEY.get(name, draw(st.sampled_from(["bounce", "open", "x"])))
    payload: dict = {}
    # the type's own time decides event_ts, so break it more often (one in five)
    put(
        payload,
        "timestamp",
        draw(timestamp) if draw(st.integers(0, 4)) == 2 else sometimes_broken(draw, iso_ts),
    )
    put(
        payload,
        "bounceType",
        sometimes_broken(draw, st.sampled_from(["Permanent", "Transient", "Undetermined"])),
    )
    for k, v in (
        ("bounceSubType", st.text(max_size=10)),
        (
            "link",
            st.one_of(st.text(max_size=20), address.map(lambda a: f"https://example.com/u?e={a}")),
        ),
        ("smtpResponse", diagnostic),
        ("reason", diagnostic),
        ("errorMessage", diagnostic),
        ("complaintFeedbackType", st.text(max_size=8)),
        ("delayType", st.text(max_size=8)),
    ):
        if draw(st.booleans()):
            put(payload, k, sometimes_broken(draw, v))
    list_key = ses.RECIPIENT_LIST.get(
        name, draw(st.sampled_from(["bouncedRecipients", "recipients", "none"]))
    )
    put(
        payload,
        list_key,
        sometimes_broken(draw, st.lists(recipient_entry(), min_size=1, max_size=4)),
    )
    put(doc, key, sometimes_broken(draw, st.just(payload)))
    return doc


def sns(inner) -> dict:
    return {
        "Type": "Notification",
        "MessageId": "19ba9823-d7f2-53c1-860e-cb10e0d13dfc",
        "TopicArn": "arn:aws:sns:us-east-1:1234567890:SES_Events",
        "Message": inner if isinstance(inner, str) else json.dumps(inner) + "\n",
    }


def sqs(inner) -> dict:
    return {
        "MessageId": "5fea7756",
        "ReceiptHandle": "AQEB",
        "Body": inner if isinstance(inner, str) else json.dumps(inner),
    }


setup_message = st.sampled_from(
    [
        {
            "Type": "SubscriptionConfirmation",
            "Message": "You have chosen to subscribe ...",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:SES_Notifications",
            "Token": "T",
        },
        sns("Successfully validated SNS topic for Amazon SES event publishing."),
        sns({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}),
    ]
)

not_json_text = st.text(min_size=1, max_size=20).filter(lambda s: _not_json(s))


def _not_json(s: str) -> bool:
    try:
        orjson.loads(s)
    except orjson.JSONDecodeError:
        return True
    return False


@st.composite
def wrapped(draw, record=ses_record()):
    """A record as it arrives: bare, in SNS, in SQS(SNS), raw SQS, or in a receive dump."""
    shape = draw(st.sampled_from(["bare", "sns", "sqs-sns", "sqs", "dump", "setup", "broken"]))
    if shape == "setup":
        return draw(setup_message)
    if shape == "broken":
        return draw(st.sampled_from([sns, sqs]))(draw(not_json_text))
    if shape == "dump":
        items = draw(
            st.lists(
                st.one_of(
                    record.map(lambda r: sqs(sns(r))),
                    setup_message.map(sqs),
                    json_leaf,
                    not_json_text.map(sqs),
                ),
                max_size=4,
            )
        )
        return {"Messages": items}
    rec = draw(record)
    return {"bare": lambda r: r, "sns": sns, "sqs-sns": lambda r: sqs(sns(r)), "sqs": sqs}[shape](
        rec
    )


# ----------------------------------------------------------------------------- properties

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
LEAK = re.compile(r"zq\d+(?:@|%40)", re.IGNORECASE)


def check_result(res) -> None:
    assert res.records == len(res.events) + len(res.dead_letters) + res.without_event
    assert res.records >= 1  # nothing vanishes: every record is counted somewhere
    for dl in res.dead_letters:
        assert isinstance(dl.reason, str) and dl.reason
        assert not dl.reason.startswith("ses normalizer error"), dl.reason  # no crash caught
        assert isinstance(dl.raw, str) and dl.provider == "ses"
        assert not LEAK.search(dl.reason)
    for ev in res.events:
        check_event(ev)
    if res.events:
        table = events_to_arrow(res.events)  # the canonical schema accepts them
        assert table.num_rows == len(res.events)
    orjson.dumps([event_to_json(e) for e in res.events])


def check_event(ev: dict) -> None:
    assert tuple(ev) == FIELD_NAMES
    assert HEX32.fullmatch(ev["event_id"])
    assert ev["provider"] == "ses"
    assert ev["event_type"] in EVENT_TYPES
    assert isinstance(ev["provider_event_type"], str) and ev["provider_event_type"].strip()
    if ev["event_type"] == "bounce":
        assert ev["bounce_class"] in BOUNCE_CLASSES
    else:
        assert ev["bounce_class"] is None
    ts = ev["event_ts"]
    assert isinstance(ts, datetime) and ts.utcoffset() == timedelta(0)
    assert base._MIN_TS <= ts < base._MAX_TS  # the accepted range (base.check_ts)
    assert isinstance(ev["event_date"], date) and ev["event_date"] == ts.date()
    assert HEX64.fullmatch(ev["email_hash"])
    dom = ev["recipient_domain"]
    assert dom is None or (isinstance(dom, str) and dom == dom.lower() and "@" not in dom)
    assert isinstance(ev["categories"], list)
    assert all(isinstance(c, str) and c and c == c.strip() for c in ev["categories"])
    assert len(set(ev["categories"])) == len(ev["categories"])
    for name in ("message_id", "reason", "smtp_status", "url", "attempt"):
        v = ev[name]
        assert v is None or (isinstance(v, str) and v and v == v.strip()), (name, v)
    for name in ("reason", "url"):
        assert ev[name] is None or not LEAK.search(ev[name]), (name, ev[name])
    assert ev["source_uri"] == "prop://ses"


@SETTINGS
@given(wrapped())
def test_ses_shaped_records_never_raise_and_are_accounted_for(doc):
    check_result(ses.normalize(doc, CTX))  # the module itself: nothing caught for it
    check_result(normalize_document(doc, CTX, "auto"))


@SETTINGS
@given(ses_record())
def test_envelopes_do_not_change_the_events(rec):
    as_read, error = parse_json(json.dumps(rec).encode())  # the record as a line of a file
    assert error is None
    bare = ses.normalize(as_read, CTX)
    check_result(bare)
    for doc in (sns(rec), sqs(sns(rec)), {"Messages": [sqs(sns(rec))]}):
        res = ses.normalize(doc, CTX)
        check_result(res)
        assert res.events == bare.events
        assert (res.records, res.without_event, len(res.dead_letters)) == (
            bare.records,
            bare.without_event,
            len(bare.dead_letters),
        )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(
        st.one_of(
            wrapped().map(lambda d: json.dumps(d).encode()),
            st.binary(max_size=20).filter(lambda b: b"\n" not in b),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_files_of_ses_lines_are_fully_accounted_for(lines):
    res = normalize_bytes(b"\n".join(lines) + b"\n", CTX, "ses")
    assert res.records == len(res.events) + len(res.dead_letters) + res.without_event
    assert res.records >= sum(1 for ln in lines if ln.strip())
    for ev in res.events:
        check_event(ev)
    assert all(dl.line >= 1 and dl.source_uri == "prop://ses" for dl in res.dead_letters)


@SETTINGS
@given(json_any)
def test_arbitrary_json_through_the_ses_entry_never_raises(doc):
    res = normalize_document(doc, CTX, "ses")
    assert res.records == len(res.events) + len(res.dead_letters) + res.without_event
    assert res.records >= 1
    if isinstance(doc, dict) and ses.looks_like(doc):
        check_result(ses.normalize(doc, CTX))
