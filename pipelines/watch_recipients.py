"""The list a watch is about: the caller's addresses, checked and hashed locally, each
hash mapped back to the caller's own address for the report (or, resumed from the send
log, known by hash only)."""

from __future__ import annotations

from typing import Iterable

from .hashing import EmailHasher


def _addresses(email_list: Iterable[str]) -> list[str]:
    if isinstance(email_list, (str, bytes)):
        raise TypeError(
            "email_list must be a list of addresses, not one string "
            "(wrap a single address in a list)"
        )
    out = []
    for a in email_list:
        if not isinstance(a, str):
            raise TypeError(f"email_list holds {type(a).__name__} {a!r}; addresses are strings")
        if a.strip():
            out.append(a)
    return out


class _Recipients:
    """The caller's list, hashed locally: hash -> the caller's own address (first form)."""

    def __init__(self, email_list: Iterable[str], hasher: EmailHasher):
        self.by_hash: dict[str, str] = {}
        self.duplicates = 0
        for address in _addresses(email_list):
            h = hasher.hash(address)
            if h in self.by_hash:
                self.duplicates += 1
            else:
                self.by_hash[h] = address

    @classmethod
    def from_hashes(cls, hashes: Iterable[str]) -> "_Recipients":
        """Recipients known by hash only (a watch resumed from the send log): results
        then name hashes, never addresses."""
        self = cls([], None)  # type: ignore[arg-type]
        for h in hashes:
            self.by_hash.setdefault(h, h)
        return self

    @property
    def hashes(self) -> list[str]:
        return list(self.by_hash)

    def __len__(self) -> int:
        return len(self.by_hash)
