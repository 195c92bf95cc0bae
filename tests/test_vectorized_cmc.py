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
    st.sampled_from(["Asia/Tokyo", "UTC", "America/New_York", "Asia/Kolkata"]),
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


@pytest.mark.parametrize("mutation", ["ids", "time", "hour", "category"])
def test_comparison_fails_when_the_paths_differ(monkeypatch, mutation):
    """Mutation check: a fast path that differs in one field is caught."""
    lines = list(SYNTH[:200])
    if mutation == "ids":  # the id without its empty last part
        real = cmc_columnar.event_ids
        monkeypatch.setattr(cmc_columnar, "event_ids", lambda p, parts: real(p, parts[:-1]))
    elif mutation == "hour":  # the per-hour start an hour off
        real_start = cmc_columnar._hour_start

        def shifted(hour, ctx):
            got = real_start(hour, ctx)
            return got and (got[0] + 3_600_000_000, got[1])

        monkeypatch.setattr(cmc_columnar, "_hour_start", shifted)
    elif mutation == "time":  # times an hour off
        from datetime import datetime, timezone

        monkeypatch.setattr(cmc_columnar, "_EPOCH", datetime(1970, 1, 1, 1, tzinfo=timezone.utc))
    else:  # the category field ignored
        real_events = cmc_columnar._events
        monkeypatch.setattr(cmc_columnar, "_events", lambda *a: real_events(*a[:7], None, a[8]))
    with pytest.raises(AssertionError):
        assert_same(chunk_of(lines), context(cmc_category_field="apiData"), MODULES)


# -- created times: kernels per local hour vs the provider's parser per value ----------------
#: Zones with daylight-saving transitions (gaps and repeated hours), a half-hour offset,
#: a half-hour DST shift (Lord Howe) and the default.
ZONES = [
    "Asia/Tokyo",
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/St_Johns",
]
#: Local days around transitions in those zones, the epoch, and the end of the range.
DAYS = [
    "2024-03-10",
    "2024-11-03",
    "2024-03-31",
    "2024-10-27",
    "2024-04-07",
    "2024-10-06",
    "2026-11-20",
    "1970-01-01",
    "2159-12-31",
    "2160-01-01",
    "0001-01-01",
    "2024-02-29",
    "2023-02-29",
    "2026-13-01",
    "2026-00-10",
    "9999-12-31",
]


def _one_time(ctx):
    from datetime import datetime, timezone

    from pipelines.normalizers.base import RecordError

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def one_time(v):
        try:
            ts = cmc.parse_created(v, ctx)
        except RecordError:
            return None
        return {"us": (ts - epoch) // cmc_columnar._US, "iso": ts.isoformat()}

    return one_time


@st.composite
def created_texts(draw):
    day = draw(st.sampled_from(DAYS))
    if draw(st.booleans()):
        day = day.replace("-", "/")
    h, m, s = (draw(st.integers(0, top)) for top in (25, 61, 61))
    text = f"{day} {h:02d}:{m:02d}:{s:02d}"
    return draw(
        st.sampled_from(
            [
                text,
                text,
                text,
                f" {text}",
                text + "Z",
                text[:-1],
                text.replace(" ", "T") + "+09:00",
                "",
                "not a time",
            ]
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(created_texts(), st.none()), min_size=1, max_size=40), st.sampled_from(ZONES)
)
def test_created_times_equal_the_providers_parser_in_every_zone(values, zone):
    import pyarrow as pa

    from pipelines.normalizers.columns import per_distinct

    ctx = context(cmc_timezone=zone)
    arr = pa.array(values, pa.string())
    fast = cmc_columnar.created_times(arr, _one_time(ctx), ctx).to_pylist()
    assert fast == per_distinct(arr, _one_time(ctx), cmc_columnar._TIME).to_pylist()


def test_created_times_take_the_kernels_for_the_documented_shape(monkeypatch):
    import pyarrow as pa

    ctx = context()
    calls = []
    one = _one_time(ctx)
    values = [f"2026-11-20 {h:02d}:{m:02d}:07" for h in range(24) for m in range(60)]
    got = cmc_columnar.created_times(pa.array(values), lambda v: calls.append(v) or one(v), ctx)
    assert calls == []  # no value went through the per-value parser
    from datetime import datetime, timezone

    utc = datetime(2026, 11, 19, 15, 0, 7, tzinfo=timezone.utc)  # 00:00:07 in Japan
    assert got[0].as_py() == {"us": int(utc.timestamp()) * 1_000_000, "iso": utc.isoformat()}
