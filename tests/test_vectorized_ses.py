"""The vectorized SES path gives exactly what the per-record SES normalizer gives."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectorized_support import (
    assert_same,
    chunk_of,
    context,
    mutated,
    payload_docs,
    raw_mutated,
    sns_wrapped,
    synth_lines,
)

from pipelines.normalizers import columns, ses, ses_columnar, vectorized

MODULES = (ses_columnar,)
SYNTH = synth_lines("ses")
SYNTH_DOCS = [orjson.loads(ln) for ln in SYNTH[:300]]
PAYLOADS = payload_docs("ses")


@st.composite
def ses_lines(draw):
    kind = draw(
        st.sampled_from(["synth", "synth", "mutated-synth", "payload", "mutated-payload", "sns"])
    )
    if kind == "synth":
        return draw(st.sampled_from(SYNTH))
    if kind == "payload":
        return orjson.dumps(draw(st.sampled_from(PAYLOADS)))
    if kind == "sns":
        return orjson.dumps(sns_wrapped(draw(mutated(SYNTH_DOCS + PAYLOADS))))
    base = SYNTH_DOCS if kind == "mutated-synth" else PAYLOADS
    return orjson.dumps(draw(mutated(base)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(raw_mutated(ses_lines()), min_size=1, max_size=25),
    st.sampled_from(["category", "ses:configuration-set", "missing"]),
)
def test_fast_path_equals_exact_path(lines, tag):
    assert_same(chunk_of(lines), context(ses_category_tag=tag), MODULES)


def test_synth_records_take_the_fast_path():
    fast = assert_same(chunk_of(list(SYNTH)), context(), MODULES)
    # every SES record synth writes (bare or SNS-wrapped) is in the clean shape
    assert fast.records_fast == len(SYNTH) and not fast.residual
    assert fast.events.num_rows > len(SYNTH)  # multi-recipient records fan out


def test_synth_chunks_take_the_arrow_reader():
    """Tier 1: a chunk of bare event-publishing records is read by Arrow's JSON reader
    (no Python object per record); the SNS-wrapped ones are left to the record path."""
    bare = [ln for ln in SYNTH if ln.startswith(b'{"eventType"')]
    t1 = vectorized.normalize_chunk_arrow(chunk_of(list(SYNTH)), context(), modules=MODULES)
    assert t1 is not None and t1.records_fast == len(bare)
    assert all(not r.raw.startswith(b'{"eventType"') for r in t1.residual)


def test_chunks_arrow_cannot_read_as_orjson_does_take_the_record_path():
    base = list(SYNTH[:40])
    for odd in (
        b'{"eventType":"Send","mail":5}',  # a type Arrow cannot hold
        b'{"eventType":"Send","eventType":"Open"}',  # a repeated key it reads
        b"",
        b"[1]",
    ):
        chunk = chunk_of(base[:20] + [odd] + base[20:])
        assert vectorized.normalize_chunk_arrow(chunk, context(), modules=MODULES) is None
        assert_same(chunk, context(), MODULES)
    # a line with NaN is read by Arrow, but only the exact path may answer for it
    nan = base[5][:-1] + b',"x":NaN}'
    chunk = chunk_of(base[:5] + [nan] + base[6:])
    t1 = vectorized.normalize_chunk_arrow(chunk, context(), modules=MODULES)
    assert t1 is not None and any(r.raw == nan for r in t1.residual)
    assert_same(chunk, context(), MODULES)


def test_real_payloads_agree_and_event_records_take_the_fast_path():
    lines = [orjson.dumps(d) for d in PAYLOADS]
    fast = assert_same(chunk_of(lines), context(), MODULES)
    took = {orjson.loads(r.raw).get("eventType") for r in fast.residual} - {None}
    assert took == set(), f"event-publishing payloads left to the exact path: {took}"


def test_reads_the_mapping_dicts_of_the_ses_module(monkeypatch):
    """The fast path has no copy of the mapping: a change in ses.py changes both paths."""
    lines = [orjson.dumps(d) for d in PAYLOADS]
    monkeypatch.setitem(ses.EVENT_MAP, "Delivery", "deferred")
    monkeypatch.setitem(ses.BOUNCE_CLASS, "Permanent", "soft")
    fast = assert_same(chunk_of(lines), context(), MODULES)
    types = dict(
        zip(fast.events["provider_event_type"].to_pylist(), fast.events["event_type"].to_pylist())
    )
    assert types["Delivery"] == "deferred"
    assert "soft" in fast.events["bounce_class"].to_pylist()


@pytest.mark.parametrize("mutation", ["iso", "reason", "domain"])
def test_comparison_fails_when_the_paths_differ(monkeypatch, mutation):
    """Mutation check: a fast path that differs in one field is caught."""
    import pyarrow.compute as pc

    lines = list(SYNTH[:200]) + [orjson.dumps(d) for d in PAYLOADS]
    if mutation == "iso":  # event ids from the date alone
        monkeypatch.setattr(
            ses_columnar, "iso_utc", lambda ts, head=None: pc.strftime(ts, format="%Y-%m-%d")
        )
    elif mutation == "reason":  # reasons no longer redacted
        monkeypatch.setattr(ses_columnar, "redact_column", lambda a: a)
    else:  # domains upper-cased
        real = ses_columnar.recipient_columns

        def upper(addresses, ctx):
            h, d, bad = real(addresses, ctx)
            return h, pc.utf8_upper(d), bad

        monkeypatch.setattr(ses_columnar, "recipient_columns", upper)
    with pytest.raises(AssertionError):
        assert_same(chunk_of(lines), context(), MODULES)


def test_small_chunks_stay_on_the_exact_path():
    lines = list(SYNTH[: vectorized.MIN_RECORDS - 1])
    fast = vectorized.normalize_chunk(chunk_of(lines), context(), modules=MODULES)
    assert fast.records_fast == 0 and len(fast.residual) == len(lines)


def test_the_whitespace_set_is_pythons():
    import sys

    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert columns._PY_SPACE == every


@pytest.mark.parametrize("word", [["Delivery", "Delivery"], {"a": 1}, 7, None])
def test_an_sns_wrapped_record_with_an_odd_event_name_is_a_dead_letter_not_a_crash(word):
    """Found by the property test: an SNS envelope whose record's eventType is a list
    crashed the chunk (an unhashable look-up) instead of becoming the dead letter the exact
    path makes of it; the chunk's other records still load."""
    inner = orjson.loads(SYNTH[0]) if SYNTH else {}
    inner = {k: v for k, v in inner.items() if k != "notificationType"}
    inner["eventType"] = word
    envelope = {
        "Type": "Notification",
        "MessageId": "m-1",
        "Timestamp": "2026-11-20T00:00:00.000Z",
        "TopicArn": "arn:aws:sns:x",
        "Message": orjson.dumps(inner).decode(),
    }
    lines = [orjson.dumps(envelope)] + list(SYNTH[1:40])
    fast = assert_same(chunk_of(lines), context(), MODULES)
    assert fast.records_fast >= 30  # the good records still took the fast path
