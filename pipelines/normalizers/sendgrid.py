"""SendGrid Event Webhook.

A POST body is a JSON array of event objects (one batch can mix kinds); a record
may also be one bare event object. SendGrid's event names are the canonical vocabulary.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..events import deterministic_event_id
from .base import (NormalizeContext, RecordError, Result, base_event, categories_from,
                   check_ts, recipient_fields, text)

PROVIDER = "sendgrid"

#: provider word (lower-cased) -> canonical event_type. Identity by design.
EVENT_MAP = {
    "processed": "processed",
    "dropped": "dropped",
    "delivered": "delivered",
    "deferred": "deferred",
    "bounce": "bounce",
    "open": "open",
    "click": "click",
    "spamreport": "spamreport",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "group_unsubscribe",
    "group_resubscribe": "group_resubscribe",
}

#: Events about the account, not a recipient: counted as records without an event.
NO_RECIPIENT_EVENTS = frozenset({"account_status_change"})

#: ``bounce`` events carry ``type``: ``bounce`` (a hard bounce) or ``blocked``.
BOUNCE_TYPE_CLASS = {"blocked": "block", "block": "block", "bounce": "hard"}

#: Epoch values above this are milliseconds (1e11 s is the year 5138).
_MS_THRESHOLD = 100_000_000_000


def looks_like(doc: Any) -> bool:
    if isinstance(doc, list):
        return True  # a POST body; its items are checked one by one
    return isinstance(doc, dict) and "event" in doc and (
        "sg_event_id" in doc or "email" in doc or "timestamp" in doc or "sg_message_id" in doc)


def normalize(doc: Any, ctx: NormalizeContext) -> Result:
    if isinstance(doc, list):
        res = Result()
        if not doc:
            return res.skip()  # an empty POST body: a record that carries no event
        for i, item in enumerate(doc):
            res.extend(_one(item, ctx, i))
        return res
    return _one(doc, ctx, 0)


def _one(item: Any, ctx: NormalizeContext, index: int) -> Result:
    res = Result()
    if not isinstance(item, dict):
        return res.dead(f"batch item {index} is not an event object", item, PROVIDER, index)
    try:
        return res.add(_event(item, ctx))
    except _NoRecipient:
        return res.skip()
    except RecordError as exc:
        return res.dead(str(exc), item, PROVIDER, index)


#: One event object of a batch (``index`` is its position) -> Result; used by the load
#: job for the rows its columnar fast path leaves to the exact path.
normalize_item = _one


class _NoRecipient(Exception):
    pass


def parse_timestamp(value: Any) -> datetime:
    """Epoch seconds as int, float or numeric string; milliseconds are recognised."""
    if isinstance(value, bool) or value is None:
        raise RecordError("missing timestamp")
    if isinstance(value, str):
        v = value.strip()
        try:
            value = float(v) if any(c in v for c in ".eE") else int(v)
        except ValueError:
            raise RecordError(f"unreadable timestamp {value!r}") from None
    if not isinstance(value, (int, float)) or value != value:  # NaN
        raise RecordError(f"unreadable timestamp {value!r}")
    if abs(value) >= _MS_THRESHOLD:
        value = value / 1000.0
    try:
        ts = datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise RecordError(f"timestamp out of range: {value!r}") from None
    return check_ts(ts)


def message_id(ev: dict[str, Any]) -> str | None:
    """``sg_message_id`` up to ``.filter``; else the X-Message-Id inside ``smtp-id``.

    ``14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0`` -> ``14c5d75ce93.dfd.64b469``;
    stray spaces are trimmed; ``<14c5d75ce93.dfd.64b469@ismtpd-555>`` -> ``14c5d75ce93.dfd.64b469``.
    """
    sg = ev.get("sg_message_id")
    if isinstance(sg, str) and sg.strip():
        mid = sg.strip()
        cut = mid.find(".filter")
        if cut > 0:
            mid = mid[:cut]
        return mid.strip() or None
    smtp = ev.get("smtp-id")
    if isinstance(smtp, str) and smtp.strip():
        mid = smtp.strip().strip("<>").strip()
        at = mid.find("@")
        if at > 0:
            mid = mid[:at]
        return mid or None
    return None


def _event(ev: dict[str, Any], ctx: NormalizeContext) -> dict[str, Any]:
    word = ev.get("event")
    if not isinstance(word, str) or not word.strip():
        raise RecordError("missing event name")
    name = word.strip().lower()
    email = ev.get("email")
    if name in NO_RECIPIENT_EVENTS and not (isinstance(email, str) and email.strip()):
        raise _NoRecipient()
    ts = parse_timestamp(ev.get("timestamp"))
    email_hash, domain = recipient_fields(ctx, email)
    event_type = EVENT_MAP.get(name, "unknown")
    mid = message_id(ev)

    bounce_class = None
    if event_type == "bounce":
        btype = text(ev.get("type"))
        bounce_class = BOUNCE_TYPE_CLASS.get(btype.lower(), "hard") if btype else "hard"

    url = text(ev.get("url"))
    event_id = text(ev.get("sg_event_id"))
    if event_id is None:
        event_id = deterministic_event_id(PROVIDER, mid, name, email_hash, ts, url or "")

    return base_event(
        ctx,
        event_id=event_id,
        provider=PROVIDER,
        event_type=event_type,
        provider_event_type=word.strip(),
        bounce_class=bounce_class,
        event_ts=ts,
        message_id=mid,
        email_hash=email_hash,
        recipient_domain=domain,
        categories=categories_from(ev.get("category")),
        reason=text(ev.get("reason")) or text(ev.get("response")),
        smtp_status=text(ev.get("status")),
        url=url,
        attempt=text(ev.get("attempt")),
    )
