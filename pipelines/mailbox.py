"""Mailbox providers: which service holds a recipient's mailbox (Gmail, Microsoft, Yahoo,
Yahoo! JAPAN, Apple, docomo, au, SoftBank, ...), from the recipient domain.

Deliverability work is per mailbox provider: googlemail.com and gmail.com are one
receiving system, hotmail.co.jp and outlook.com another, yahoo.co.jp is not yahoo.com.
The mapping is data, maintained in the repo with its sources:
``pipelines/data/mailbox_providers.csv`` (one ``domain,mailbox_provider,source`` row per
domain). A domain matches itself and its subdomains (``biz.ezweb.ne.jp`` is au); the
longest listed suffix wins; anything else is :data:`OTHER`, and a missing domain is
:data:`UNKNOWN`.

>>> mailbox_provider("User@GoogleMail.com".split("@")[1])
'Gmail'
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

#: The maintained mapping (see its header for the sources).
MAPPING_CSV = Path(__file__).resolve().parent / "data" / "mailbox_providers.csv"
#: A domain not in the mapping (a company's own domain, a small ISP).
OTHER = "other"
#: No domain at all (an event without a recipient).
UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class MailboxMapping:
    """domain -> mailbox provider, with each row's source."""

    providers: dict[str, str]
    sources: dict[str, str]

    def lookup(self, domain: str | None) -> str:
        if domain is None:
            return UNKNOWN
        d = domain.strip().lower().rstrip(".")
        if "@" in d:  # a whole address: only its domain counts
            d = d.rsplit("@", 1)[1]
        if not d:
            return UNKNOWN
        labels = d.split(".")
        for i in range(len(labels) - 1):  # longest suffix first; a bare TLD never matches
            hit = self.providers.get(".".join(labels[i:]))
            if hit is not None:
                return hit
        return OTHER

    def names(self) -> list[str]:
        """The mailbox providers the mapping knows, in file order."""
        return list(dict.fromkeys(self.providers.values()))


class MappingError(ValueError):
    """The mapping file is malformed; the message names the file, line and fix."""


def read_mapping(path: str | Path = MAPPING_CSV) -> MailboxMapping:
    """Read a mapping file (``#`` lines are comments). Errors name the line."""
    path = Path(path)
    providers: dict[str, str] = {}
    sources: dict[str, str] = {}
    with path.open(encoding="utf-8", newline="") as f:
        lines = [
            (n, line)
            for n, line in enumerate(f, 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    rows = csv.reader([line for _, line in lines])
    header = next(rows, None)
    if header != ["domain", "mailbox_provider", "source"]:
        raise MappingError(
            f"{path}: the first row must be 'domain,mailbox_provider,source', got {header!r}"
        )
    for (n, _), row in zip(lines[1:], rows):
        if len(row) != 3 or not all(c.strip() for c in row):
            raise MappingError(f"{path}:{n}: expected domain,mailbox_provider,source, got {row!r}")
        domain, name, source = (c.strip() for c in row)
        if domain != domain.lower() or "@" in domain or "." not in domain:
            raise MappingError(f"{path}:{n}: {domain!r} is not a lower-case domain name")
        if domain in providers:
            raise MappingError(f"{path}:{n}: {domain} is listed twice; keep one row")
        providers[domain] = name
        sources[domain] = source
    return MailboxMapping(providers, sources)


@functools.lru_cache(maxsize=1)
def default_mapping() -> MailboxMapping:
    return read_mapping(MAPPING_CSV)


def mailbox_provider(domain: str | None, mapping: MailboxMapping | None = None) -> str:
    """The mailbox provider of a recipient domain (or address): ``'Gmail'``, ``'docomo'``,
    :data:`OTHER` when the mapping does not know it, :data:`UNKNOWN` without a domain."""
    return (mapping or default_mapping()).lookup(domain)


def add_mailbox_column(
    df,
    domain_column: str = "recipient_domain",
    mapping: MailboxMapping | None = None,
    column: str = "mailbox_provider",
):
    """A copy of ``df`` with ``mailbox_provider`` from its domain column (each distinct
    domain is looked up once)."""
    m = mapping or default_mapping()
    out = df.copy()
    domains = out[domain_column].astype(object).where(out[domain_column].notna(), None)
    lookup = {d: m.lookup(d) for d in set(domains)}
    out[column] = [lookup[d] for d in domains]
    return out


__all__ = [
    "MAPPING_CSV",
    "OTHER",
    "UNKNOWN",
    "MailboxMapping",
    "MappingError",
    "read_mapping",
    "default_mapping",
    "mailbox_provider",
    "add_mailbox_column",
]
