"""Address hashing: HMAC-SHA256 (hex) of the normalized address, whichever path computes it."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.hashing import EmailHasher, normalize_address
from pipelines.normalizers.columns import PLAIN_ADDRESS, address_hashes


def reference(key: bytes, address: str) -> str:
    """The documented hash, from the standard library's HMAC."""
    return hmac.new(key, normalize_address(address).encode("utf-8"), hashlib.sha256).hexdigest()


KEYS = st.one_of(st.binary(min_size=1, max_size=200), st.sampled_from([b"k", b"x" * 64, b"y" * 65]))
ADDRESSES = st.one_of(
    st.from_regex(r"[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9.-]{1,20}\.[A-Za-z]{2,6}", fullmatch=True),
    st.sampled_from(
        ["A@B.COM", " a@b.com ", "Name <X@Y.org>", "", "   ", "ünï@x.jp", "a\tb@c", "<a@b>", "x@"]
    ),
    st.text(max_size=30),
)


@settings(max_examples=150, deadline=None)
@given(KEYS, st.lists(st.one_of(ADDRESSES, st.none()), max_size=30))
def test_every_path_gives_the_standard_hmac(key, addresses):
    check_every_path(key, addresses)


def check_every_path(key: bytes, addresses: list) -> None:
    hasher = EmailHasher(key)
    want = [None if a is None or not a.strip() else reference(key, a) for a in addresses]
    assert [None if a is None or not a.strip() else hasher.hash(a) for a in addresses] == want
    # the column path (vectorized plain addresses, the rest one by one)
    assert address_hashes(pa.array(addresses, pa.string()), hasher).to_pylist() == want
    # after a round trip through pickle (how Beam ships the hasher to workers)
    again = pickle.loads(pickle.dumps(hasher))
    assert address_hashes(pa.array(addresses, pa.string()), again).to_pylist() == want


def test_plain_addresses_take_the_uncached_loop_and_the_rest_the_exact_one():
    hasher = EmailHasher(b"key")
    values = pa.array(["Plain@Example.com", " padded@example.com", "Name <n@example.com>"])
    plain = [bool(v) for v in pa.compute.match_substring_regex(values, PLAIN_ADDRESS).to_pylist()]
    assert plain == [True, False, False]
    got = address_hashes(values, hasher).to_pylist()
    assert got == [reference(b"key", v) for v in values.to_pylist()]
    assert hasher._cache.keys() == {" padded@example.com", "Name <n@example.com>"}


def test_a_wrong_plain_hash_is_caught(monkeypatch):
    """Mutation check: the comparison above fails if the vectorized path differs."""
    monkeypatch.setattr(EmailHasher, "hash_plain", lambda self, xs: [x.lower() for x in xs])
    with pytest.raises(AssertionError):
        check_every_path(b"key", ["a@b.com", " padded@b.com"])


def test_the_key_never_shows():
    assert "secret" not in repr(EmailHasher(b"secret")) and "secret" not in str(
        EmailHasher("secret")
    )
