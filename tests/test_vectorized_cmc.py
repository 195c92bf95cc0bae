"""The vectorized CMC path gives exactly what the per-record CMC normalizer gives."""

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
    synth_lines,
)

from pipelines.normalizers import cmc, cmc_columnar, vectorized

MODULES = (cmc_columnar,)
SYNTH = synth_lines("cmc")
SYNTH_DOCS = [orjson.loads(ln) for ln in SYNTH[:300]]
PAYLOADS = payload_docs("cmc")


@st.composite
def cmc_lines(draw):
    kind = draw(st.sampled_from(["synth", "synth", "mutated-synth", "payload", "mutated-payload"]))
    if kind == "synth":
        return draw(st.sampled_from(SYNTH))
    if kind == "payload":
        return orjson.dumps(draw(st.sampled_from(PAYLOADS)))
    base = SYNTH_DOCS if kind == "mutated-synth" else PAYLOADS
    return orjson.dumps(draw(mutated(base)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(raw_mutated(cmc_lines()), min_size=1, max_size=25),
    st.sampled_from([None, "apiData", "subject"]),
    st.sampled_from(["Asia/Tokyo", "UTC"]),
)
def test_fast_path_equals_exact_path(lines, cat_field, tz):
    assert_same(chunk_of(lines), context(cmc_category_field=cat_field, cmc_timezone=tz), MODULES)


def test_synth_deliveries_take_the_fast_path():
    fast = assert_same(chunk_of(list(SYNTH)), context(cmc_category_field="apiData"), MODULES)
    left = {orjson.loads(r.raw)["event_type"] for r in fast.residual}
    assert left <= {"bounces", "blocks"}, left  # every deliveries body took the fast path
    assert fast.records_fast > 0.8 * len(SYNTH)


def test_synth_chunks_take_the_arrow_reader():
    t1 = vectorized.normalize_chunk_arrow(chunk_of(list(SYNTH)), context(), modules=MODULES)
    deliveries = [ln for ln in SYNTH if b'"event_type":"deliveries"' in ln]
    assert t1 is not None and t1.records_fast == len(deliveries)


def test_real_payloads_agree():
    lines = [orjson.dumps(d) for d in PAYLOADS]
    fast = assert_same(chunk_of(lines), context(cmc_category_field="apiData"), MODULES)
    assert fast.records_fast >= 1  # the deliveries samples


def test_reads_the_mapping_dict_of_the_cmc_module(monkeypatch):
    monkeypatch.setitem(cmc.DELIVERY_STATUS_MAP, "succeeded", "open")
    fast = assert_same(chunk_of(list(SYNTH[:100])), context(), MODULES)
    assert "open" in fast.events["event_type"].to_pylist()


@pytest.mark.parametrize("mutation", ["ids", "time", "category"])
def test_comparison_fails_when_the_paths_differ(monkeypatch, mutation):
    """Mutation check: a fast path that differs in one field is caught."""
    lines = list(SYNTH[:200])
    if mutation == "ids":  # the id without its empty last part
        real = cmc_columnar.event_ids
        monkeypatch.setattr(cmc_columnar, "event_ids", lambda p, parts: real(p, parts[:-1]))
    elif mutation == "time":  # times an hour off
        from datetime import datetime, timezone

        monkeypatch.setattr(cmc_columnar, "_EPOCH", datetime(1970, 1, 1, 1, tzinfo=timezone.utc))
    else:  # the category field ignored
        real_events = cmc_columnar._events
        monkeypatch.setattr(cmc_columnar, "_events", lambda *a: real_events(*a[:7], None, a[8]))
    with pytest.raises(AssertionError):
        assert_same(chunk_of(lines), context(cmc_category_field="apiData"), MODULES)
