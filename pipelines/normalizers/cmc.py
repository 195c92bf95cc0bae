"""Customers Mail Cloud webhooks.

A body is ``{"event_type": "deliveries"|"bounces"|"blocks", "server_composition": ...,
"event": {"<event_type>": [ {...}, ... ]}}``; events are batched (every second or
100 events). Quirks handled here:

- no event id: a deterministic id is built from the content;
- ``created`` is ``YYYY-MM-DD HH:MM:SS`` with no offset, in Japan time (configurable);
- ``messageId`` may arrive as ``\\u003C...\\u003E`` (JSON-decoded to ``<...>``; also
  when a relay escaped it twice and the text still reads ``\\u003C``), stripped;
- an ISO ``created`` without an offset is local (configured-zone) time too;
- API v1 names recipients ``envelopeTo`` (sender ``envelopeFrom``), v2 ``to`` / ``from``;
- a failed delivery is reported twice (``deliveries`` status ``failed`` and a ``bounces``
  event a second later): both are kept as events with their own ids, and outcomes count
  the (message, recipient) once;
- bounce ``status`` may be a number (``2``) or padded (``"02"``); a code not in the
  documented list is kept in ``smtp_status`` with ``bounce_class`` ``undetermined``;
- three error statuses report mail CMC never handed to a receiving server: 9 (address
  format error), 10 (blocked address: suppressed after earlier errors) and 11
  (unsubscribed address). SendGrid calls those drops, not bounces (``Invalid``,
  ``Bounced Address``, ``Unsubscribed Address``), and its category stats count them as
  ``invalid_emails``, ``bounce_drops`` and ``unsubscribe_drops``. So they become
  ``dropped`` events (``provider_event_type`` as received, ``bounces``; ``smtp_status``
  the code) whose ``reason`` starts with SendGrid's drop reason, which is what
  queries/delivery_outcomes classifies, followed by CMC's own reason text:
  ``Bounced Address: <CMC reason>``. The same for a ``blocks`` event with such a status;
- reasons quote recipients: addresses are redacted.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

from ..events import deterministic_event_id
from .base import (
    NormalizeSettings,
    RecordError,
    Result,
    as_utc,
    base_event,
    check_ts,
    recipient_fields,
    redact_addresses,
    text,
)

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
    "1": "hard",  # unknown host
    "2": "hard",  # unknown user
    "3": "soft",  # retransmission timeout
    "4": "block",  # rejected by the receiver's policy
    "5": "soft",  # over capacity (mailbox full)
    "6": "soft",  # forward error
    "7": "soft",  # receiving server error
    "8": "soft",  # oversized message
    "99": "hard",  # other permanent error
    # 9, 10, 11: never sent, so drops (DROP_STATUS_REASON), not bounces
}

#: Error ``status`` codes for mail CMC did not send -> SendGrid's drop reason, the start
#: of the event's ``reason`` (queries/delivery_outcomes classifies drops by it).
DROP_STATUS_REASON = {
    "9": "Invalid Address",  # address format error -> invalid_emails
    "10": "Bounced Address",  # blocked address (suppressed after earlier errors) -> bounce_drops
    "11": "Unsubscribed Address",  # unsubscribed address (one-click unsubscribe) -> unsubscribe_drops
}

_ENHANCED_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_BASIC_STATUS = re.compile(r"^\s*([245])\d\d\b")


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and "event_type" in doc and isinstance(doc.get("event"), dict)


def normalize(doc: dict[str, Any], ctx: NormalizeSettings) -> Result:
    res = Result()
    raw_kind = doc.get("event_type")
    kind = text(raw_kind) if isinstance(raw_kind, (str, int, float)) else None
    body = doc["event"]
    items = body.get(kind) if kind else None
    if not isinstance(items, list):
        # Tolerate a body whose list sits under another key (or a single object).
        lists = [v for v in body.values() if isinstance(v, list)]
        if len(lists) == 1:
            items = lists[0]
        elif kind and isinstance(body.get(kind), dict):
            items = [body[kind]]
        elif not kind:
            return res.dead(
                "CMC body has no event_type (deliveries, bounces or blocks)", doc, PROVIDER
            )
        else:
            keys = ", ".join(sorted(map(str, body))[:8])
            return res.dead(
                f"CMC body has no '{kind}' event list under 'event' (keys: [{keys}])", doc, PROVIDER
            )
    if not items:
        return res.skip()  # an empty batch carries no event
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            res.dead(f"batch item {i} is not an event object", item, PROVIDER, i)
            continue
        try:
            res.add(_event(kind or "", item, ctx))
        except RecordError as exc:
            res.dead(f"{kind} event {i}: {exc}", item, PROVIDER, i)
    return res


def parse_created(value: Any, ctx: NormalizeSettings) -> datetime:
    """``2023-01-25 14:05:15`` in the configured zone (Japan time) -> UTC.

    ``2023/01/25 14:05:15`` and ISO 8601 are read too; an ISO time with an offset keeps
    it, one without is local time like the documented format.
    """
    if not isinstance(value, str) or not value.strip():
        raise RecordError("missing created time")
    return _created_utc(value.strip(), ctx.cmc_tz)


def _fast_local(v: str) -> datetime | None:
    """The documented ``YYYY-MM-DD HH:MM:SS`` without strptime (about 8x faster)."""
    if (
        len(v) == 19
        and v[4] == v[7]
        and v[4] in "-/"
        and v[10] == " "
        and v[13] == v[16] == ":"
        and (v[:4] + v[5:7] + v[8:10] + v[11:13] + v[14:16] + v[17:]).isascii()
        and (v[:4] + v[5:7] + v[8:10] + v[11:13] + v[14:16] + v[17:]).isdigit()
    ):
        try:
            return datetime(
                int(v[:4]), int(v[5:7]), int(v[8:10]), int(v[11:13]), int(v[14:16]), int(v[17:])
            )
        except ValueError:
            return None  # e.g. month 13: strptime below gives the same answer (none)
    return None


@functools.lru_cache(maxsize=65536)
def _created_utc(v: str, tz) -> datetime:
    """A batch's events often share their second: each distinct value is converted once."""
    local = _fast_local(v)
    for fmt in () if local is not None else ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S"):
        try:
            local = datetime.strptime(v, fmt)
            break
        except ValueError:
            continue
    if local is None:
        iso = v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v
        try:
            local = datetime.fromisoformat(iso)
        except ValueError:
            raise RecordError(
                f"unreadable created time {v[:40]!r} (expected YYYY-MM-DD HH:MM:SS)"
            ) from None
    try:
        if local.tzinfo is None:
            local = local.replace(tzinfo=tz)
        return check_ts(as_utc(local))
    except OverflowError:  # 0001-01-01 00:00:00 in Japan is before year 1 in UTC
        raise RecordError(f"created time out of range: {v[:40]!r}") from None


#: ``\\u003C`` / ``\\u003E`` left as text by a relay that escaped the body twice.
_ESCAPED_ANGLE = re.compile(r"\\u003[cCeE]")


def normalize_message_id(value: Any) -> str | None:
    v = text(value) if not isinstance(value, (dict, list)) else None
    if v is None:
        return None
    v = _ESCAPED_ANGLE.sub("", v)
    return v.strip("<> \t") or None


def status_code(status: str | None) -> str | None:
    """The documented form of a status code: ``"02"`` / ``2.0`` -> ``"2"``."""
    if status is None:
        return None
    code = status.strip()
    if code.isdigit():
        code = str(int(code))  # "02" -> "2"
    elif code.endswith(".0") and code[:-2].isdigit():
        code = str(int(code[:-2]))  # 2.0 from a float
    return code


def bounce_class_for(status: str | None) -> str:
    """Documented codes classify; anything else (a newer code) is ``undetermined``."""
    code = status_code(status)
    return "undetermined" if code is None else BOUNCE_STATUS_CLASS.get(code, "undetermined")


def drop_reason(status: str | None, reason: str | None) -> str | None:
    """``Bounced Address: <reason>`` for a status of DROP_STATUS_REASON, else None."""
    word = DROP_STATUS_REASON.get(status_code(status) or "")
    if word is None:
        return None
    return f"{word}: {reason}" if reason else word


def smtp_class(reason: str | None) -> str:
    """Classify a failed delivery by the SMTP code in its reason text."""
    if reason:
        m = _ENHANCED_STATUS.search(reason) or _BASIC_STATUS.search(reason)
        if m:
            return {"5": "hard", "4": "soft"}.get(m.group(1), "undetermined")
    return "undetermined"


def _event(kind: str, item: dict[str, Any], ctx: NormalizeSettings) -> dict[str, Any]:
    ts = parse_created(item.get("created"), ctx)
    # API v2 names the recipient ``to``; API v1 named it ``envelopeTo``; the Blocks API
    # (and so possibly ``blocks`` events, whose webhook shape is not published) ``email``.
    recipient = item.get("to")
    for alt in ("envelopeTo", "email"):
        if isinstance(recipient, str) and recipient.strip():
            break
        recipient = item.get(alt, recipient)
    if recipient is not None and not isinstance(recipient, str):
        raise RecordError(f"recipient address is a {type(recipient).__name__}, not a string")
    email_hash, domain = recipient_fields(ctx, recipient)
    mid = normalize_message_id(item.get("messageId"))
    status = text(item.get("status")) if not isinstance(item.get("status"), (dict, list)) else None
    reason = redact_addresses(text(item.get("reason")))
    smtp_status = None
    bounce_class = None

    kind_l = kind.strip().lower()
    if kind_l == "deliveries":
        word = (status or "").lower()
        event_type = DELIVERY_STATUS_MAP.get(word, "unknown")
        provider_event_type = f"{kind}.{status}" if status else kind
        if event_type == "bounce":
            bounce_class = smtp_class(reason)
    else:
        event_type = KIND_MAP.get(kind_l, "unknown")
        provider_event_type = kind or "unknown"
        smtp_status = status
        dropped = drop_reason(status, reason) if event_type in ("bounce", "dropped") else None
        if dropped is not None:
            event_type, reason = "dropped", dropped
        elif event_type == "bounce":
            bounce_class = bounce_class_for(status)

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
