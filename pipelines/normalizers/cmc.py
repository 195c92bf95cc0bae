"""Customers Mail Cloud webhooks.

A body is ``{"event_type": "deliveries"|"bounces"|"blocks", "server_composition": ...,
"event": {"<event_type>": [ {...}, ... ]}}``; events are batched (every second or
100 events). Quirks handled here:

- no event id: a deterministic id is built from the content;
- ``created`` is ``YYYY-MM-DD HH:MM:SS`` with no offset, in Japan time (configurable);
- ``messageId`` may arrive as ``\\u003C...\\u003E`` (JSON-decoded to ``<...>``), stripped;
- API v1 names recipients ``envelopeTo`` (sender ``envelopeFrom``), v2 ``to`` / ``from``;
- a failed delivery is reported twice (``deliveries`` status ``failed`` and a ``bounces``
  event a second later): both are kept as events with their own ids, and outcomes count
  the (message, recipient) once.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from ..events import deterministic_event_id
from .base import (NormalizeContext, RecordError, Result, base_event, check_ts,
                   parse_iso_ts, recipient_fields, text)

PROVIDER = "cmc"

#: ``deliveries`` status -> canonical event_type
DELIVERY_STATUS_MAP = {
    "queued": "processed",
    "succeeded": "delivered",
    "deferred": "deferred",
    "failed": "bounce",
}

#: ``event_type`` -> canonical event_type for kinds without a status word
KIND_MAP = {"bounces": "bounce", "blocks": "dropped"}

#: Bounce ``status`` codes (CMC documentation) -> bounce_class. The list has grown over
#: time; a code not here is kept in ``smtp_status`` and classed ``undetermined``.
BOUNCE_STATUS_CLASS = {
    "1": "hard",    # unknown host
    "2": "hard",    # unknown user
    "3": "soft",    # retransmission timeout
    "4": "block",   # rejected by the receiver's policy
    "5": "soft",    # over capacity (mailbox full)
    "6": "soft",    # forward error
    "7": "soft",    # receiving server error
    "8": "soft",    # oversized message
    "9": "hard",    # address format error
    "10": "hard",   # blocked address (suppressed after earlier errors)
    "11": "hard",   # unsubscribed address (one-click unsubscribe)
    "99": "hard",   # other permanent error
}

_ENHANCED_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_BASIC_STATUS = re.compile(r"^\s*([245])\d\d\b")


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and "event_type" in doc and isinstance(doc.get("event"), dict)


def normalize(doc: dict[str, Any], ctx: NormalizeContext) -> Result:
    res = Result()
    kind = text(doc.get("event_type"))
    body = doc["event"]
    items = body.get(kind) if kind else None
    if not isinstance(items, list):
        # Tolerate a body whose list sits under another key (or a single object).
        lists = [v for v in body.values() if isinstance(v, list)]
        if len(lists) == 1:
            items = lists[0]
        elif kind and isinstance(body.get(kind), dict):
            items = [body[kind]]
        else:
            return res.dead(f"CMC body has no '{kind}' event list", doc, PROVIDER)
    if not items:
        return res.skip()  # an empty batch carries no event
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            res.dead(f"batch item {i} is not an event object", item, PROVIDER, i)
            continue
        try:
            res.add(_event(kind or "", item, ctx))
        except RecordError as exc:
            res.dead(str(exc), item, PROVIDER, i)
    return res


def parse_created(value: Any, ctx: NormalizeContext) -> datetime:
    """``2023-01-25 14:05:15`` in the configured zone (Japan time) -> UTC."""
    if not isinstance(value, str) or not value.strip():
        raise RecordError("missing created time")
    v = value.strip()
    try:
        local = datetime.strptime(v, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        try:
            local = datetime.strptime(v, "%Y/%m/%d %H:%M:%S")
        except ValueError:
            return parse_iso_ts(v)  # an offset-carrying ISO time, if ever sent
    return check_ts(local.replace(tzinfo=ctx.cmc_tz).astimezone(timezone.utc))


def normalize_message_id(value: Any) -> str | None:
    v = text(value)
    if v is None:
        return None
    return v.strip("<> \t") or None


def smtp_class(reason: str | None) -> str:
    """Classify a failed delivery by the SMTP code in its reason text."""
    if reason:
        m = _ENHANCED_STATUS.search(reason) or _BASIC_STATUS.search(reason)
        if m:
            return {"5": "hard", "4": "soft"}.get(m.group(1), "undetermined")
    return "undetermined"


def _event(kind: str, item: dict[str, Any], ctx: NormalizeContext) -> dict[str, Any]:
    ts = parse_created(item.get("created"), ctx)
    recipient = item.get("to") if item.get("to") not in (None, "") else item.get("envelopeTo")
    email_hash, domain = recipient_fields(ctx, recipient)
    mid = normalize_message_id(item.get("messageId"))
    status = text(item.get("status"))
    reason = text(item.get("reason"))
    smtp_status = None
    bounce_class = None

    if kind == "deliveries":
        word = (status or "").lower()
        event_type = DELIVERY_STATUS_MAP.get(word, "unknown")
        provider_event_type = f"deliveries.{word}" if word else "deliveries"
        if event_type == "bounce":
            bounce_class = smtp_class(reason)
    else:
        event_type = KIND_MAP.get(kind, "unknown")
        provider_event_type = kind or "unknown"
        smtp_status = status
        if event_type == "bounce":
            bounce_class = BOUNCE_STATUS_CLASS.get(status or "", "undetermined")

    categories: list[str] = []
    if ctx.cmc_category_field:
        cat = text(item.get(ctx.cmc_category_field))
        if cat:
            categories = [cat]

    return base_event(
        ctx,
        event_id=deterministic_event_id(PROVIDER, mid, provider_event_type, email_hash, ts),
        provider=PROVIDER,
        event_type=event_type,
        provider_event_type=provider_event_type,
        bounce_class=bounce_class,
        event_ts=ts,
        message_id=mid,
        email_hash=email_hash,
        recipient_domain=domain,
        categories=categories,
        reason=reason,
        smtp_status=smtp_status,
    )
