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
        return draw(sns_lines())
    base = SYNTH_DOCS if kind == "mutated-synth" else PAYLOADS
    return orjson.dumps(draw(mutated(base)))


@st.composite
def sns_lines(draw):
    """An SES record in an SNS envelope: the record mutated as the others are, its text
    compact or pretty-printed (a line break inside the Message) or padded, and the
    envelope's own fields (Type, Timestamp, Message, ...) replaced, removed or renamed."""
    inner = draw(mutated(SYNTH_DOCS + PAYLOADS))
    message = orjson.dumps(inner, option=draw(st.sampled_from([0, 0, 0, orjson.OPT_INDENT_2])))
    message = message.decode()
    if draw(st.integers(0, 9)) == 0:
        message = " " + message
    envelope = sns_wrapped(inner)
    envelope["Message"] = message
    return orjson.dumps(draw(mutated([envelope])))


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_mutated(sns_lines()), min_size=1, max_size=25))
def test_chunks_of_sns_envelopes_equal_the_exact_path(lines):
    """An archive drained from an SQS queue holds nothing but SNS envelopes."""
    assert_same(chunk_of(lines), context(), MODULES)


def test_synth_chunks_take_the_arrow_reader():
    """Tier 1: a chunk of event-publishing records, bare or in SNS envelopes, is read by
    Arrow's JSON reader (no Python object per record)."""
    wrapped = [ln for ln in SYNTH if ln.startswith(b'{"Type"')]
    assert wrapped and len(wrapped) < len(SYNTH)
    t1 = vectorized.normalize_chunk_arrow(chunk_of(list(SYNTH)), context(), modules=MODULES)
    assert t1 is not None and t1.records_fast == len(SYNTH) and not t1.residual
    only_sns = vectorized.normalize_chunk_arrow(chunk_of(wrapped), context(), modules=MODULES)
    assert only_sns is not None and only_sns.records_fast == len(wrapped)


def _envelope(inner: dict | str, **fields) -> bytes:
    env = {
        "Type": "Notification",
        "MessageId": "m-1",
        "Timestamp": "2026-11-20T00:00:00.000Z",
        "TopicArn": "arn:aws:sns:x",
        "Message": inner if isinstance(inner, str) else orjson.dumps(inner).decode(),
    }
    env.update(fields)
    return orjson.dumps({k: v for k, v in env.items() if v is not ...})


def _no_own_time(doc: dict) -> dict:
    """An SES Open record without its own time (the exact path then takes the envelope's)."""
    doc = orjson.loads(orjson.dumps(doc))
    doc["eventType"] = "Open"
    doc["open"] = {"ipAddress": "192.0.2.1", "userAgent": "x"}
    return doc


@pytest.mark.parametrize(
    "odd",
    [
        "no own time",
        "no own time, no envelope time",
        "subscription",
        "setup message",
        "message is an object",
        "pretty-printed message",
        "an eventType key on the envelope",
        "NaN in the message",
        "an envelope in the envelope",
    ],
)
def test_odd_envelopes_read_as_the_exact_path_reads_them(odd):
    base = orjson.loads(next(ln for ln in SYNTH if ln.startswith(b'{"eventType"')))
    line = {
        "no own time": lambda: _envelope(_no_own_time(base)),
        "no own time, no envelope time": lambda: _envelope(_no_own_time(base), Timestamp=...),
        "subscription": lambda: _envelope(base, Type="SubscriptionConfirmation"),
        "setup message": lambda: _envelope(
            "Successfully validated SNS topic for Amazon SES event publishing."
        ),
        "message is an object": lambda: (
            _envelope(base).replace(b'"Message":"', b'"M":"')[:-1]
            + b',"Message":'
            + orjson.dumps(base)
            + b"}"
        ),
        "pretty-printed message": lambda: _envelope(
            orjson.dumps(base, option=orjson.OPT_INDENT_2).decode()
        ),
        "an eventType key on the envelope": lambda: _envelope(base, eventType=None),
        "NaN in the message": lambda: _envelope(orjson.dumps(base).decode()[:-1] + ',"x":NaN}'),
        "an envelope in the envelope": lambda: _envelope(_envelope(base).decode()),
    }[odd]()
    clean = [ln for ln in SYNTH if ln.startswith(b'{"Type"')][:20]
    fast = assert_same(chunk_of(clean[:10] + [line] + clean[10:]), context(), MODULES)
    assert fast.records_fast >= 20  # the clean envelopes around it still took the fast path


def test_the_envelope_time_rule_is_what_keeps_the_paths_equal(monkeypatch):
    """Mutation check: a record without its own time in an envelope with a Timestamp has
    the envelope's time on the exact path; a tier 1 that ignored the rule would differ."""
    base = orjson.loads(next(ln for ln in SYNTH if ln.startswith(b'{"eventType"')))
    lines = [_envelope(_no_own_time(base))] + [ln for ln in SYNTH if ln.startswith(b'{"Type"')][:20]
    assert_same(chunk_of(lines), context(), MODULES)
    real = ses_columnar.normalize_table
    monkeypatch.setattr(
        ses_columnar,
        "normalize_table",
        lambda t, ctx, allowed, own_time=None: real(t, ctx, allowed),
    )
    with pytest.raises(AssertionError):
        assert_same(chunk_of(lines), context(), MODULES)


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
            ses_columnar, "_iso_text", lambda head, frac: pc.utf8_slice_codeunits(head, 0, 10)
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
