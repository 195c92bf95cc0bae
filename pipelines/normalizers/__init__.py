"""Provider normalizers and the dispatcher that tells providers apart per record.

``normalize_record(raw, ctx, provider="auto")`` takes one raw record (bytes or an
already parsed JSON value) and returns a :class:`Result`; it never raises.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..events import DeadLetter  # noqa: F401 (re-exported)
from ..records import RawRecord, iter_records, parse_json  # noqa: F401 (re-exported)
from . import cmc, sendgrid, ses
from .base import NormalizeSettings, Result, raw_text  # noqa: F401 (re-exported)

PROVIDER_MODULES = {"sendgrid": sendgrid, "ses": ses, "cmc": cmc}
PROVIDER_CHOICES = ("auto",) + tuple(PROVIDER_MODULES)

# Most specific shapes first: SES and CMC have unmistakable keys; SendGrid is a
# bare ``event`` object or an array of them.
_DETECT_ORDER = (ses, cmc, sendgrid)

__all__ = [
    "NormalizeSettings",
    "Result",
    "detect_provider",
    "normalize_record",
    "normalize_records",
    "PROVIDER_CHOICES",
]


def detect_provider(doc: Any) -> str | None:
    for module in _DETECT_ORDER:
        if module.looks_like(doc):
            return module.PROVIDER
    return None


def normalize_document(
    doc: Any, ctx: NormalizeSettings, provider: str = "auto", raw: Any = None
) -> Result:
    """One parsed JSON record to a Result (no line numbers set)."""
    if provider == "auto":
        found = detect_provider(doc)
        if found is None:
            return Result().dead(_unknown_shape(doc), raw if raw is not None else doc, None)
        provider = found
    module = PROVIDER_MODULES[provider]
    if not module.looks_like(doc):
        return Result().dead(
            f"not a {provider} record: {_describe(doc)}", raw if raw is not None else doc, provider
        )
    try:
        return module.normalize(doc, ctx)
    except Exception as exc:  # noqa: BLE001 - a normalizer bug must not lose the record
        return Result().dead(
            f"{provider} normalizer error: {type(exc).__name__}: {exc}",
            raw if raw is not None else doc,
            provider,
        )


def normalize_record(record: RawRecord, ctx: NormalizeSettings, provider: str = "auto") -> Result:
    """A record from :func:`iter_records` to a Result whose dead letters carry source and line."""
    if record.error is not None:
        res = Result().dead(record.error, record.raw, None if provider == "auto" else provider)
    else:
        res = normalize_document(record.doc, ctx, provider, raw=record.raw)
    for dl in res.dead_letters:
        dl.source_uri = ctx.source_uri
        dl.line = record.line
    return res


def normalize_records(
    records: Iterable[RawRecord], ctx: NormalizeSettings, provider: str = "auto"
) -> Result:
    total = Result()
    for rec in records:
        total.extend(normalize_record(rec, ctx, provider))
    return total


def normalize_bytes(data: bytes, ctx: NormalizeSettings, provider: str = "auto") -> Result:
    """A whole (already decompressed) file."""
    return normalize_records(iter_records(data), ctx, provider)


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        keys = ", ".join(sorted(map(str, doc))[:8])
        return f"object with keys [{keys}]"
    if isinstance(doc, list):
        return f"array of {len(doc)}"
    return type(doc).__name__ if doc is not None else "null"


def _unknown_shape(doc: Any) -> str:
    return "unknown record shape (not SendGrid, SES or CMC): " + _describe(doc)
