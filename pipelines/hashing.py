"""Email hashing: HMAC-SHA256 (hex) of the trimmed, lower-cased address.

Plain addresses never reach the warehouse; only these hashes do. The key comes
from ``MAILPULSE_HASH_KEY`` (read once, at the entry point, by :func:`resolve_key`)
and flows down as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from email.utils import parseaddr

log = logging.getLogger(__name__)

#: Used only on the embedded default when no key is configured (with a warning).
DEVELOPMENT_KEY = b"mailpulse-development-key-not-for-production"
HASH_KEY_ENV = "MAILPULSE_HASH_KEY"


class MissingHashKey(RuntimeError):
    pass


def resolve_key(environ=None, *, embedded: bool = True) -> bytes:
    """The HMAC key from the environment.

    On the embedded default (DuckDB) a missing key falls back to a fixed
    development key with a one-line warning; elsewhere it is an error naming the fix.
    """
    environ = os.environ if environ is None else environ
    key = environ.get(HASH_KEY_ENV, "")
    if key:
        return key.encode("utf-8")
    if embedded:
        log.warning(
            "%s is not set: using the fixed development key (hashes will not match "
            "production; set %s to a secret to fix)",
            HASH_KEY_ENV,
            HASH_KEY_ENV,
        )
        return DEVELOPMENT_KEY
    raise MissingHashKey(
        f"{HASH_KEY_ENV} is not set. Set it to the secret used for this warehouse, "
        f"e.g. `export {HASH_KEY_ENV}=...` (the same key for every load and query)."
    )


def normalize_address(address: str) -> str:
    """Trimmed, lower-cased bare address; ``"Name <a@b>"`` gives ``a@b``."""
    a = address.strip()
    if "<" in a and ">" in a:
        parsed = parseaddr(a)[1]
        if parsed:
            a = parsed.strip()
    return a.lower()


def recipient_domain(address: str) -> str | None:
    a = normalize_address(address)
    at = a.rfind("@")
    if at < 0 or at == len(a) - 1:
        return None
    return a[at + 1 :]


class EmailHasher:
    """Hashes addresses with a fixed key; memoises recent addresses (a recipient has many events)."""

    _CACHE_MAX = 200_000

    def __init__(self, key: bytes | str):
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not key:
            raise MissingHashKey(f"empty hash key; set {HASH_KEY_ENV}")
        self._key = key
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:  # never show the key
        return "EmailHasher(<key hidden>)"

    def __reduce__(self):  # picklable, so Beam can ship it to workers
        return (EmailHasher, (self._key,))

    def hash(self, address: str) -> str:
        h = self._cache.get(address)
        if h is None:
            m = self._base.copy()
            m.update(normalize_address(address).encode("utf-8"))
            h = m.hexdigest()
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()
            self._cache[address] = h
        return h

    __call__ = hash
