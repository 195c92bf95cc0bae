"""The load job's columnar SendGrid path gives exactly what the per-record path gives."""

from __future__ import annotations

from datetime import datetime, timezone

from conftest import TEST_HASH_KEY
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.events import EVENT_SCHEMA, events_to_arrow
from pipelines.hashing import EmailHasher
from pipelines.normalizers import sendgrid
from pipelines.normalizers.base import NormalizeSettings
from pipelines.normalizers.sendgrid_columnar import normalize_items

INGESTED = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)

_text = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "x", " padded ", "250 OK", "5.1.1", "\x1cx", "x\u3000"]),
    st.text(max_size=6),
    st.integers(-5, 5),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.integers(0, 3), max_size=2),
)
_events = st.sampled_from(
    [
        "processed",
        "delivered",
        "bounce",
        "deferred",
        "open",
        "click",
        "dropped",
        "spamreport",
        "unsubscribe",
        "Delivered",
        " open",
        "machine_open",
        "account_status_change",
        "",
        None,
        3,
    ]
)
_ts = st.one_of(
    st.integers(1_600_000_000, 1_900_000_000),
    st.integers(1_600_000_000_000, 1_900_000_000_000),
    st.sampled_from([0, -1, 10**13 * 99, "1700000000", 1.7e9, 1700000000.5, None, True, 2**70]),
)
_email = st.one_of(
    st.sampled_from(
        ["a@x.com", " B@Example.COM ", "Name <c@y.jp>", "", "  ", "noat", "d@", None, 5]
    ),
    st.emails(),
)
_ids = st.one_of(
    st.sampled_from(["abc==", "id-1", " spaced ", "", None, 7, "a b"]), st.text(max_size=5)
)
_mids = st.one_of(
    st.sampled_from(
        ["m1.filter0001.1.0", "m2", ".filterx", "m3.filter", " m4 ", "", None, "m5.recvd-x"]
    ),
    st.text(max_size=6),
)
_cats = st.one_of(
    st.none(),
    st.sampled_from(["news", " news", "", ["a", "b"], ["a", "a"], ["a", 1], [], 5, ["x "]]),
    st.lists(st.text(max_size=3), max_size=3),
)


_CLEAN = st.fixed_dictionaries(
    {
        "event": st.sampled_from(
            [
                "processed",
                "delivered",
                "bounce",
                "deferred",
                "open",
                "click",
                "dropped",
                "spamreport",
                "unsubscribe",
            ]
        ),
        "email": st.sampled_from(["a@x.com", "B@Example.COM", "c@y.jp"]),
        "timestamp": st.one_of(
            st.integers(1_600_000_000, 1_900_000_000),
            st.integers(1_600_000_000_000, 1_900_000_000_000),
        ),
        "sg_event_id": st.from_regex(r"[A-Za-z0-9=_-]{1,8}", fullmatch=True),
        "sg_message_id": st.sampled_from(
            ["m1.filter0001.1.0", "m2", "m5.recvd-x", "m3.filterdrecv"]
        ),
        "category": st.sampled_from(["news", ["a", "b"], None]),
        "response": st.sampled_from(["250 OK", None]),
    }
)
_PERTURB = {
    "event": _events,
    "email": _email,
    "timestamp": _ts,
    "sg_event_id": _ids,
    "sg_message_id": _mids,
    "category": _cats,
    "reason": _text,
    "response": _text,
    "status": _text,
    "url": _text,
    "attempt": _text,
    "type": st.sampled_from(["blocked", "Blocked", " blocked ", "bounce", "block", "", 5]),
    "smtp-id": st.sampled_from(["<m9@ismtpd>", None]),
}


@st.composite
def sg_items(draw):
    """A clean event with zero to three fields replaced or removed."""
    item = dict(draw(_CLEAN))
    for key in draw(st.lists(st.sampled_from(sorted(_PERTURB)), max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            item.pop(key, None)
        else:
            item[key] = draw(_PERTURB[key])
    return item


def _rows(table):
    return sorted(table.to_pylist(), key=lambda r: (r["event_id"], str(r["event_ts"])))


@settings(max_examples=150, deadline=None)
@given(st.lists(sg_items(), min_size=1, max_size=12))
def test_columnar_path_equals_exact_path(items):
    hasher = EmailHasher(TEST_HASH_KEY)
    ctx = NormalizeSettings(hasher=hasher, source_uri="s://f", ingested_at=INGESTED)
    fast, rejected = normalize_items(items, ctx)
    assert fast.schema == EVENT_SCHEMA
    exact_events = []
    for i, item in enumerate(items):
        res = sendgrid.normalize_item(item, ctx, i)
        if i in rejected:
            continue
        # rows the fast path kept must be rows the exact path turns into one event
        assert len(res.events) == 1 and not res.dead_letters, item
        exact_events.extend(res.events)
    assert _rows(fast) == _rows(events_to_arrow(exact_events))


def test_clean_batch_takes_the_fast_path_entirely(hasher):
    ctx = NormalizeSettings(hasher=hasher, source_uri="s://f", ingested_at=INGESTED)
    items = [
        {
            "email": f"u{i}@x.com",
            "timestamp": 1763600000 + i,
            "event": "delivered",
            "sg_event_id": f"e{i}",
            "sg_message_id": f"m{i}.filter01",
            "category": "c",
            "response": "250 OK",
        }
        for i in range(100)
    ]
    fast, rejected = normalize_items(items, ctx)
    assert rejected == [] and fast.num_rows == 100
    assert fast.column("message_id")[3].as_py() == "m3"
    assert fast.column("reason")[0].as_py() == "250 OK"
