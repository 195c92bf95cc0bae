"""SendGrid POST bodies read by Arrow's JSON reader (tier 1) give exactly what the
per-record SendGrid normalizer gives."""

from __future__ import annotations

import orjson
import pyarrow as pa
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
    synth_lines,
)

from pipelines.normalizers import columns, sendgrid, sendgrid_columnar, vectorized

MODULES = (sendgrid_columnar,)
SYNTH = synth_lines("sendgrid")
SYNTH_DOCS = [orjson.loads(ln) for ln in SYNTH[:300]]
# every payload as a POST body (a JSON array), as the collector archives them
PAYLOADS = [d if isinstance(d, list) else [d] for d in payload_docs("sendgrid")]


@st.composite
def sendgrid_lines(draw):
    kind = draw(
        st.sampled_from(
            [
                "synth",
                "synth",
                "mutated-synth",
                "payload",
                "mutated-payload",
                "spaced-category",
                "renamed-key",
                "category-as-a-value",
            ]
        )
    )
    if kind == "synth":
        return draw(st.sampled_from(SYNTH))
    if kind == "payload":
        return orjson.dumps(draw(st.sampled_from(PAYLOADS)))
    if kind == "spaced-category":  # the key in a spelling the rename does not see
        return draw(st.sampled_from(SYNTH)).replace(b'"category":', b'"category" :', 1)
    if kind == "renamed-key":  # a key that is one of the rename's own spellings
        new = draw(st.sampled_from([b'"category_s":', b'"category_l":', b'"category_x":']))
        return draw(st.sampled_from(SYNTH)).replace(b'"category":', new)
    if kind == "category-as-a-value":  # the word, quoted, where the rename must not touch it
        line = draw(st.sampled_from(SYNTH))
        return line.replace(b'"event":"', b'"reason":"category","event":"', 1).replace(
            b'"category":[', b'"category":["category",', 1
        )
    base = SYNTH_DOCS if kind == "mutated-synth" else PAYLOADS
    return orjson.dumps(draw(mutated(base)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_mutated(sendgrid_lines()), min_size=1, max_size=25))
def test_fast_path_equals_exact_path(lines):
    assert_same(chunk_of(lines), context(), MODULES)


def test_synth_bodies_take_the_arrow_reader():
    t1 = vectorized.normalize_chunk_arrow(chunk_of(list(SYNTH)), context(), modules=MODULES)
    assert t1 is not None and t1.records_fast == len(SYNTH) and not t1.residual
    assert_same(chunk_of(list(SYNTH)), context(), MODULES)


def test_keys_spelled_like_the_rename_take_the_record_path(monkeypatch):
    """A body that already has a ``category_s`` key (not a SendGrid key: the exact path
    ignores it) must not have it read as the category."""
    import numpy as np

    lines = [
        ln.replace(b'"category":"', b'"category_s":"')
        for ln in SYNTH
        if b'"category":"' in ln and b'"category":[' not in ln
    ][:30]
    fast = assert_same(chunk_of(lines), context(), MODULES)
    assert fast.records_fast == 0
    # without the guard the comparison fails: the guard is what keeps the paths equal
    monkeypatch.setattr(
        sendgrid_columnar, "arrow_allowed", lambda lines: np.ones(len(lines), dtype=bool)
    )
    with pytest.raises(AssertionError):
        assert_same(chunk_of(lines), context(), MODULES)


def test_real_payloads_agree():
    lines = [orjson.dumps(d) for d in PAYLOADS] * 2
    assert_same(chunk_of(lines), context(), MODULES)


def test_reads_the_mapping_dicts_of_the_sendgrid_module(monkeypatch):
    monkeypatch.setitem(sendgrid.EVENT_MAP, "open", "click")
    monkeypatch.setitem(sendgrid.BOUNCE_TYPE_CLASS, "bounce", "soft")
    lines = list(SYNTH[:200])
    fast = assert_same(chunk_of(lines), context(), MODULES)
    pairs = set(
        zip(fast.events["provider_event_type"].to_pylist(), fast.events["event_type"].to_pylist())
    )
    assert ("open", "click") in pairs


@pytest.mark.parametrize(
    "mutation", ["message_id", "message_id, other shapes", "categories", "texts"]
)
def test_comparison_fails_when_the_paths_differ(monkeypatch, mutation):
    """Mutation check: a fast path that differs in one field is caught."""
    import pyarrow.compute as pc

    lines = list(SYNTH[:200])
    if mutation == "message_id":  # the whole sg_message_id kept (the common shape)
        monkeypatch.setattr(sendgrid_columnar, "_message_part", lambda m: pa.nulls(len(m), m.type))
    elif mutation == "message_id, other shapes":  # ids the plain search does not take
        lines = [ln.replace(b".filter", b".FILTER", 1) for ln in lines]
        monkeypatch.setattr(sendgrid_columnar, "_MESSAGE_PART", r"^(?P<m>.*?)\.never")
    elif mutation == "categories":  # string categories lost
        real = sendgrid_columnar.arrow_input
        monkeypatch.setattr(
            sendgrid_columnar,
            "arrow_input",
            lambda c, lines: (
                (real(c, lines)[0].replace(b'"category":"', b'"category_y":"'),)
                + real(c, lines)[1:]
            ),
        )
    else:  # texts upper-cased
        real_text = columns.text_array
        monkeypatch.setattr(columns, "text_array", lambda a: pc.utf8_upper(real_text(a)))
    with pytest.raises(AssertionError):
        assert_same(chunk_of(lines), context(), MODULES)
