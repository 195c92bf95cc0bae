"""The byte-level screens of tier 1 say what the plain checks they replace say."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.normalizers import columns, vectorized

#: bytes that make the screens' cases: backslashes, escapes, the two words, delimiters
_PIECES = [b"\\", b"u", b"0", b"00", b"\\u00", b"\\u0041", b"\\u003C", b"\\u005f", b"NaN", b"Inf"]
_PIECES += [b"4", b"5", b"7", b"a", b"A", b"f", b"-", b" ", b"\t"]
_PIECES += [b":", b",", b"[", b"{", b"}", b'"', b"a", b"N", b"I", b"x@y.jp", b"\n"]


@st.composite
def texts(draw):
    return b"".join(draw(st.lists(st.sampled_from(_PIECES), max_size=60)))


@settings(max_examples=400, deadline=None)
@given(texts())
def test_has_letter_escape_is_the_pattern(text):
    pattern = re.compile(columns.LETTER_ESCAPE.encode())
    assert columns.has_letter_escape(text) == bool(pattern.search(text))


@settings(max_examples=400, deadline=None)
@given(st.lists(texts(), min_size=1, max_size=8))
def test_the_nan_screen_finds_every_line_the_pattern_matches(parts):
    lines = [p.replace(b"\n", b"") or b"{}" for p in parts]
    chunk = b"\n".join(lines) + b"\n"
    found = set(vectorized._rapidjson_only_lines(chunk, vectorized.split_lines(chunk)).tolist())
    pattern = re.compile(vectorized._RAPIDJSON_ONLY.encode())
    assert found == {i for i, ln in enumerate(lines) if pattern.search(ln)}


def test_the_nan_screen_on_a_chunk_without_the_words():
    chunk = b'{"a":1}\n{"b":"Nat"}\n'
    got = vectorized._rapidjson_only_lines(chunk, vectorized.split_lines(chunk))
    assert isinstance(got, np.ndarray) and not len(got)


_TEXT = st.text(alphabet=st.sampled_from(list(columns._PY_SPACE[:6]) + list("ab\u3000\x85é\u200b")))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), _TEXT), max_size=30))
def test_needs_trim_is_what_str_strip_changes(values):
    import pyarrow as pa

    for typ in (pa.string(), pa.large_string()):
        got = columns.needs_trim(pa.array(values, typ)).to_pylist()
        assert got == [None if v is None else v != v.strip() for v in values]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode("utf-8")))
def test_is_utf8_is_pythons_decoder(data):
    try:
        data.decode("utf-8")
        want = True
    except UnicodeDecodeError:
        want = False
    assert vectorized.is_utf8(data) == want


_IDS = st.sampled_from(["<a@b>", "<m1@example.jp>", "a@b", "<a b>", "<<a>>", "<a\\u003cb>", "<>"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), _IDS, st.text(max_size=8)), max_size=20))
def test_cmc_message_ids_are_the_providers(values):
    import pyarrow as pa

    from pipelines.normalizers import cmc, cmc_columnar

    got = cmc_columnar.message_ids(pa.array(values, pa.string())).to_pylist()
    assert got == [None if v is None else cmc.normalize_message_id(v) for v in values]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(alphabet="ab:@<> é\u3000-", max_size=6)), max_size=20),
    st.integers(0, 5),
)
def test_only_chars_is_the_pattern(values, offset):
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(values, pa.string()).slice(min(offset, len(values)))
    for pattern, chars in (
        (columns.PLAIN_ADDRESS, columns._PLAIN_CHARS),
        (r"^[ab:@\-]+$", b"ab:@-"),
    ):
        got = columns.only_chars(arr, pattern, chars)
        assert got.to_pylist() == pc.match_substring_regex(arr, pattern).to_pylist()


@pytest.mark.parametrize("provider", ["sendgrid", "ses", "ses in sns", "cmc"])
def test_a_record_nested_too_deep_is_the_exact_paths_dead_letter(provider, monkeypatch):
    """Arrow's reader reads a record nested 300 deep (in a field the mapping ignores);
    the exact path makes it a dead letter. Tier 1 must leave it to the exact path."""
    import orjson
    from vectorized_support import assert_same, chunk_of, context, sns_wrapped, synth_lines

    from pipelines.normalizers import cmc_columnar, sendgrid_columnar, ses_columnar

    module = {"sendgrid": sendgrid_columnar, "cmc": cmc_columnar}.get(provider, ses_columnar)
    opener = b"[" if provider == "sendgrid" else b"{"
    base = [ln for ln in synth_lines(provider.split()[0]) if ln[:1] == opener]
    base = [ln for ln in base if not ln.startswith(b'{"Type"')][:30]
    nest = b"[" * 300 + b"]" * 300
    if provider == "sendgrid":
        deep = base[0][:-2] + b',"x":' + nest + b"}]"
    else:
        deep = base[0][:-1] + b',"x":' + nest + b"}"
    if provider == "ses in sns":
        envelope = sns_wrapped({})
        envelope["Message"] = deep.decode()
        deep = orjson.dumps(envelope)
    chunk = chunk_of(base[:10] + [deep] + base[10:])
    fast = assert_same(chunk, context(), (module,))
    assert fast.records_fast >= 29
    monkeypatch.setattr(vectorized, "_maybe_too_deep", lambda chunk, lines: [])
    with pytest.raises(AssertionError):  # the check is what keeps the paths equal
        assert_same(chunk, context(), (module,))
