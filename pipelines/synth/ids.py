"""Deterministic provider ids, recomputable from (seed, date, provider, message index)."""

from __future__ import annotations

import base64
import binascii
import random
import struct
from datetime import date

from .model import PROVIDERS

_MASK = (1 << 64) - 1
_b64 = binascii.b2a_base64


def _mix(x: int) -> int:
    """splitmix64: a bijective scramble of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed_key(seed: int, day: date, salt: str) -> int:
    h = random.Random(f"mailpulse-synth/{seed}/{day.isoformat()}/{salt}")
    return h.getrandbits(64)


class _Ids:
    """Deterministic provider ids, recomputable from (provider, message index)."""

    def __init__(self, seed: int, day: date):
        self._k = [_seed_key(seed, day, p) for p in PROVIDERS]
        self._ke = _seed_key(seed, day, "events")
        self._kc = _seed_key(seed, day, "cmc-uuid")

    def message_id(self, provider: int, i: int) -> str:
        x = _mix(self._k[provider] ^ i)
        if provider == 0:  # SendGrid X-Message-Id: 22 characters of URL-safe base64
            y = _mix(x ^ 0x5DEECE66D)
            return base64.urlsafe_b64encode(struct.pack("<QQ", x, y))[:22].decode()
        if provider == 1:  # SES: 0100 + hex time + uuid-like + -000000
            y = _mix(x ^ 0xB5AD4ECEDA1CE2A9)
            return (
                f"0100{(x >> 16) & 0xFFFFFFFFFFFF:012x}-{y >> 32:08x}-{(y >> 16) & 0xFFFF:04x}"
                f"-{y & 0xFFFF:04x}-{(x & 0xFFFF):04x}-{_mix(y) & 0xFFFFFFFFFFFF:012x}-000000"
            )
        y = _mix(x ^ self._kc)  # CMC: a uuid at the sending domain
        return (
            f"{x >> 32:08x}-{(x >> 16) & 0xFFFF:04x}-{x & 0xFFFF:04x}-{y >> 48:04x}-"
            f"{y & 0xFFFFFFFFFFFF:012x}@mail.example.com"
        )

    def event_id(self, n: int) -> bytes:
        """A unique 22-character id per event number (two bijections of ``n``)."""
        return _b64(
            struct.pack(
                "<QQ",
                (n * 0x9E3779B97F4A7C15 + self._ke) & _MASK,
                ((n ^ self._ke) * 0xBF58476D1CE4E5B9) & _MASK,
            ),
            newline=False,
        )[:22]
