"""Property tests: whatever arrives, the normalizers never raise, every record ends as
events, dead letters or a counted no-event record, and every event is well-typed.

Example counts are modest (the machine is small and shared); the provider-shaped
strategies put their effort where the normalizers branch (timestamps, ids, recipients,
status codes) rather than on random keys that would be ignored.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.events import (
    BOUNCE_CLASSES,
    EVENT_TYPES,
    FIELD_NAMES,
    PROVIDERS,
    event_to_json,
    events_to_arrow,
)
from pipelines.hashing import EmailHasher
from pipelines.normalizers import (
    PROVIDER_CHOICES,
    NormalizeSettings,
    normalize_bytes,
    normalize_document,
)
from pipelines.normalizers import sendgrid as sg_module

SETTINGS = settings(
    max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
CTX = NormalizeSettings(
    hasher=EmailHasher("prop-test-key"), source_uri="prop://x", cmc_category_field="apiData"
)
HEX64 = re.compile(r"[0-9a-f]{64}")


def check(res, addresses=()) -> None:
    """The invariants every Result satisfies."""
    assert res.records == len(res.events) + len(res.dead_letters) + res.without_event
    assert res.records >= 0 and res.without_event >= 0
    for dl in res.dead_letters:
        assert isinstance(dl.reason, str) and dl.reason.strip(), dl
        # The dispatcher's last-resort catch means a normalizer bug, not a bad record.
        assert "normalizer error" not in dl.reason, dl.reason
        assert isinstance(dl.raw, str)
        assert dl.provider is None or dl.provider in PROVIDERS
    for ev in res.events:
        check_event(ev)
        out = orjson.dumps(event_to_json(ev)).decode()
        for a in addresses:
            assert a not in out, (a, out)
    if res.events:
        assert events_to_arrow(res.events).num_rows == len(res.events)  # schema-valid


def check_event(ev: dict) -> None:
    assert set(ev) == set(FIELD_NAMES)
    assert isinstance(ev["event_id"], str) and ev["event_id"]
    assert ev["provider"] in PROVIDERS
    assert ev["event_type"] in EVENT_TYPES
    assert ev["provider_event_type"] is None or isinstance(ev["provider_event_type"], str)
    if ev["event_type"] == "bounce":
        assert ev["bounce_class"] in BOUNCE_CLASSES
    else:
        assert ev["bounce_class"] is None
    ts = ev["event_ts"]
    assert isinstance(ts, datetime) and ts.utcoffset() == timedelta(0)
    assert ts.tzinfo == timezone.utc
    assert type(ev["event_date"]) is date and ev["event_date"] == ts.date()
    assert isinstance(ev["email_hash"], str) and HEX64.fullmatch(ev["email_hash"])
    dom = ev["recipient_domain"]
    assert dom is None or (isinstance(dom, str) and dom == dom.lower() and "@" not in dom)
    assert isinstance(ev["categories"], list)
    assert all(isinstance(c, str) and c for c in ev["categories"])
    for name in ("message_id", "reason", "smtp_status", "url", "attempt", "source_uri"):
        v = ev[name]
        assert v is None or (isinstance(v, str) and v == v.strip() and v), (name, v)


# --- arbitrary input -----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
# Python values a JSON parser could hand over (orjson reads 1e999 as inf).
python_values = st.recursive(
    json_scalars | st.floats(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
providers = st.sampled_from(PROVIDER_CHOICES)


@SETTINGS
@given(st.binary(max_size=1500), providers)
def test_arbitrary_bytes_never_crash(data, provider):
    check(normalize_bytes(data, CTX, provider))


@SETTINGS
@given(python_values, providers)
def test_arbitrary_values_never_crash(doc, provider):
    check(normalize_document(doc, CTX, provider))


@SETTINGS
@given(
    st.lists(json_values, min_size=1, max_size=4),
    st.sampled_from(["ndjson", "pretty", "concatenated"]),
    providers,
)
def test_arbitrary_json_files_never_crash(docs, layout, provider):
    if layout == "ndjson":
        text = "\n".join(json.dumps(d) for d in docs)
    elif layout == "pretty":
        text = "\n".join(json.dumps(d, indent=2) for d in docs)
    else:
        text = "".join(json.dumps(d) for d in docs)
    res = normalize_bytes(text.encode(), CTX, provider)
    check(res)
    assert res.records >= 1


# --- provider-shaped input -----------------------------------------------------------

local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{2,12}", fullmatch=True)
domains = st.from_regex(r"[a-z0-9-]{1,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
addresses = st.builds(lambda local, d: f"{local}@{d}", local_parts, domains)
# ``.map`` keeps a union from being flattened into its callers' unions, so a choice like
# ``names | weird`` is half names, not one branch in ten.
weird = (json_scalars | st.lists(st.text(max_size=8), max_size=3) | st.just("")).map(lambda v: v)
epoch = st.integers(-(10**12), 10**13)
timestamps = (
    epoch
    | epoch.map(str)
    | st.floats(-1e13, 1e13)
    | st.integers(10**17, 10**20)
    | st.just(10**400)
    | weird
)
sg_event_names = (
    st.sampled_from(
        list(sg_module.EVENT_MAP)
        + ["account_status_change", "Processed", "SPAM REPORT", "spam report", "machine_open"]
    )
    | weird
)
sg_message_ids = (
    st.sampled_from(
        [
            "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            " x.filter1",
            "filter0093p1las1.9128.5717FB8127.0",
            "5lFl7Fr1Rjme_EyzNNB_5A.stfilter-015.5185.55F883172.0",
            "",
        ]
    )
    | weird
)


@st.composite
def sendgrid_events(draw):
    email = draw(addresses | weird)
    fields = {
        "event": sg_event_names,
        "email": st.just(email),
        "timestamp": timestamps,
        "sg_event_id": st.text(max_size=10) | weird,
        "sg_message_id": sg_message_ids,
        "smtp-id": st.sampled_from(["<14c5d75ce93.dfd.64b469@ismtpd-555>", "<>", " "]) | weird,
        "category": weird | st.lists(st.text(max_size=6) | st.integers(), max_size=4),
        "type": st.sampled_from(["bounce", "blocked", "compliance_suspend"]) | weird,
        "reason": st.builds(
            lambda a, t: f"550 5.1.1 <{a}>: {t}", st.just(email), st.text(max_size=10)
        )
        if isinstance(email, str)
        else weird,
        "response": weird,
        "status": weird,
        "attempt": weird,
        "url": st.builds(lambda a: f"https://x.example/?u={a}", st.just(email))
        if isinstance(email, str)
        else weird,
        "custom_arg": json_values,
    }
    ev = {}
    for key, strat in fields.items():
        if key in ("event", "email", "timestamp") or draw(st.booleans()):
            if draw(st.integers(0, 9)) > 0 or key not in ("event", "email", "timestamp"):
                ev[key] = draw(strat)
    return ev, email


@SETTINGS
@given(st.lists(sendgrid_events(), max_size=6), st.booleans())
def test_sendgrid_shaped_batches(items, bare):
    docs = [ev for ev, _ in items]
    doc = docs[0] if bare and docs else docs
    res = normalize_document(doc, CTX, "auto")
    plain = [a for _, a in items if isinstance(a, str) and "@" in a and len(a.split("@")[0]) >= 3]
    check(res, plain)
    if isinstance(doc, list) and doc:
        assert res.records == len(doc)  # one per batch item
    for ev in res.events:
        assert ev["provider"] == "sendgrid"
    # Deterministic: the same input gives the same events.
    again = normalize_document(doc, CTX)
    assert [e["event_id"] for e in again.events] == [e["event_id"] for e in res.events]


created_times = (
    # The edges of what datetime and the partition range can hold, in any zone.
    st.sampled_from(
        [
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59",
            "1970-01-01 00:00:00",
            "2159-12-31 23:59:59",
            "2160-01-01 09:00:00",
            "0001-01-01T00:00:00+14:00",
        ]
    )
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
    )
    | st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1)).map(
        lambda d: d.strftime("%Y/%m/%d %H:%M:%S")
    )
    | st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))).map(lambda d: d.isoformat())
    | weird
)
cmc_status = (
    st.sampled_from(["queued", "succeeded", "failed", "deferred"])
    | st.integers(0, 120).map(str)
    | st.integers(0, 120)
    | weird
)


@st.composite
def cmc_bodies(draw):
    kind = draw(
        st.sampled_from(["deliveries", "bounces", "blocks", "Bounces"]) | st.text(max_size=8)
    )
    items, plain = [], []
    for _ in range(draw(st.integers(0, 5))):
        to = draw(addresses | weird)
        if isinstance(to, str) and "@" in to:
            plain.append(to)
        item = {
            "created": draw(created_times),
            draw(st.sampled_from(["to", "envelopeTo", "email"])): to,
            "messageId": draw(
                st.sampled_from(["<a@b>", "\u003cx@y\u003e", "\\u003Cz@w\\u003E"]) | weird
            ),
            "status": draw(cmc_status),
            "reason": draw(st.just(f"550 5.1.1 <{to}> unknown") | weird),
            "apiData": draw(weird),
        }
        if draw(st.booleans()):
            item.pop(draw(st.sampled_from(["created", "status"])))
        items.append(item if draw(st.integers(0, 9)) else draw(json_values))
    under = kind if draw(st.integers(0, 4)) else draw(st.text(max_size=5))
    event = {under: items} if draw(st.integers(0, 6)) else draw(json_values)
    doc = {"event_type": kind, "server_composition": "pro", "event": event}
    return doc, plain


@SETTINGS
@given(
    cmc_bodies(), st.sampled_from(["Asia/Tokyo", "UTC", "America/New_York", "Pacific/Kiritimati"])
)
def test_cmc_shaped_bodies(body, zone):
    doc, plain = body
    ctx = NormalizeSettings(hasher=CTX.hasher, cmc_timezone=zone, cmc_category_field="apiData")
    res = normalize_document(doc, ctx, "auto")
    check(res, [a for a in plain if len(a.split("@")[0]) >= 3])
    for ev in res.events:
        assert ev["provider"] == "cmc"


ses_types = (
    st.sampled_from(
        [
            "Send",
            "Reject",
            "Bounce",
            "Complaint",
            "Delivery",
            "Open",
            "Click",
            "Rendering Failure",
            "DeliveryDelay",
            "Subscription",
            "Other",
        ]
    )
    | weird
)


@st.composite
def ses_records(draw):
    t = draw(ses_types)
    recips = draw(st.lists(addresses | weird, max_size=3))
    rec = {
        draw(st.sampled_from(["eventType", "notificationType"])): t,
        "mail": {
            "timestamp": draw(
                st.datetimes(timezones=st.just(timezone.utc)).map(
                    lambda d: d.isoformat().replace("+00:00", "Z")
                )
                | weird
            ),
            "messageId": draw(st.text(max_size=10) | weird),
            "destination": recips,
            "tags": draw(
                st.dictionaries(
                    st.text(max_size=8), st.lists(st.text(max_size=5), max_size=2), max_size=2
                )
                | weird
            ),
        },
        "bounce": {
            "bounceType": draw(st.sampled_from(["Permanent", "Transient", "Undetermined"]) | weird),
            "bouncedRecipients": [{"emailAddress": r} for r in recips],
            "timestamp": draw(st.text(max_size=25) | weird),
        },
        "delivery": {"recipients": recips, "timestamp": draw(weird)},
    }
    if draw(st.booleans()):
        rec = {"Type": "Notification", "Message": json.dumps(rec, default=str)}
    return rec


@SETTINGS
@given(ses_records())
def test_ses_shaped_records(rec):
    check(normalize_document(rec, CTX, "auto"))
