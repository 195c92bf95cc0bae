"""SendGrid Event Webhook.

A POST body is a JSON array of event objects (one batch can mix kinds); a record
may also be one bare event object. SendGrid's event names are the canonical vocabulary.

Quirks handled here (each seen in SendGrid's own Event Webhook reference or in
payloads users have published):

- ``event`` in any case (``"Processed"`` in the unique-arguments example);
- ``timestamp`` as int, numeric string (``"123456789"``) or milliseconds (Marketing
  Campaigns single sends: ``1591726752372``);
- ``category`` a string or an array (possibly empty);
- custom / unique arguments flattened as top-level keys (ignored: not canonical);
- ``sg_message_id`` with a stray leading space, with a ``.filter…`` or ``.stfilter…``
  suffix, or without the message part at all (``filter0093p1las1.9128.5717FB8127.0``):
  the message id then comes from ``smtp-id``;
- no ``sg_event_id`` (older posts): a deterministic id from the content;
- ``account_status_change`` carries no recipient: counted, not an event;
- reasons and URLs can quote the recipient: addresses are redacted.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from ..events import deterministic_event_id
from .base import (
    NormalizeSettings,
    RecordError,
    Result,
    base_event,
    categories_from,
    check_ts,
    recipient_fields,
    redact_addresses,
    text,
)

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

#: Other spellings of a canonical name (after lower-casing and turning spaces and
#: hyphens into ``_``): the reference's own event table writes ``spam report``.
EVENT_ALIASES = {"spam_report": "spamreport"}

#: Events about the account, not a recipient: counted as records without an event.
NO_RECIPIENT_EVENTS = frozenset({"account_status_change"})

#: ``bounce`` events carry ``type``: ``bounce`` (a hard bounce) or ``blocked``.
BOUNCE_TYPE_CLASS = {"blocked": "block", "block": "block", "bounce": "hard"}

#: Epoch values above this are milliseconds (1e11 s is the year 5138).
_MS_THRESHOLD = 100_000_000_000


def looks_like(doc: Any) -> bool:
    if isinstance(doc, list):
        return True  # a POST body; its items are checked one by one
    return (
        isinstance(doc, dict)
        and "event" in doc
        and ("sg_event_id" in doc or "email" in doc or "timestamp" in doc or "sg_message_id" in doc)
    )


def normalize(doc: Any, ctx: NormalizeSettings) -> Result:
    if isinstance(doc, list):
        if not doc:
            return Result().skip()  # an empty POST body carries no event
        res = Result()
        if not doc:
            return res.skip()  # an empty POST body: a record that carries no event
        for i, item in enumerate(doc):
            res.extend(_one(item, ctx, i))
        return res
    return _one(doc, ctx, 0)


def _one(item: Any, ctx: NormalizeSettings, index: int) -> Result:
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
            raise RecordError(f"unreadable timestamp {_short(value)}") from None
    if not isinstance(value, (int, float)) or value != value:  # NaN
        raise RecordError(f"unreadable timestamp {_short(value)}")
    try:
        if abs(value) >= _MS_THRESHOLD:
            value = value / 1000.0
        ts = datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):  # 1e400, 10**400, ...
        raise RecordError(f"timestamp out of range: {_short(value)}") from None
    return check_ts(ts)


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


#: ``<message part>.filter…`` / ``.stfilter…``: the part SendGrid adds per
#: delivery after the message id (``14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0``).
_FILTER_SUFFIX = re.compile(r"\.(?:st)?filter", re.IGNORECASE)
#: An ``sg_message_id`` that is only the per-delivery part, with no message part.
_NO_MESSAGE_PART = re.compile(r"^(?:st)?filter", re.IGNORECASE)


def message_id(ev: dict[str, Any]) -> str | None:
    """The message part of ``sg_message_id``; else the X-Message-Id inside ``smtp-id``.

    ``14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0`` -> ``14c5d75ce93.dfd.64b469``;
    ``5lFl7Fr1Rjme_EyzNNB_5A.stfilter-015.5185.55F883172.0`` -> ``5lFl7Fr1Rjme_EyzNNB_5A``;
    stray spaces are trimmed. ``filter0093p1las1.9128.5717FB8127.0`` has no message part
    (seen on ``dropped`` events), so ``smtp-id`` is used:
    ``<wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net>`` -> ``wrfRRvF7Q0GgwUo2CvDmEA``
    (the same id the message's other events carry). With neither, the trimmed
    ``sg_message_id`` is kept as given.
    """
    sg = (
        text(ev.get("sg_message_id"))
        if not isinstance(ev.get("sg_message_id"), (dict, list))
        else None
    )
    if sg is not None and not _NO_MESSAGE_PART.match(sg):
        m = _FILTER_SUFFIX.search(sg)
        mid = sg[: m.start()].strip() if m else sg
        if mid:
            return mid
    smtp = ev.get("smtp-id")
    if isinstance(smtp, str) and smtp.strip():
        mid = smtp.strip().strip("<>").strip()
        at = mid.find("@")
        if at > 0:
            mid = mid[:at]
        if mid:
            return mid
    return sg


def _event(ev: dict[str, Any], ctx: NormalizeSettings) -> dict[str, Any]:
    word = ev.get("event")
    if not isinstance(word, str) or not word.strip():
        raise RecordError("missing event name")
    name = word.strip().lower()
    key = re.sub(r"[\s-]+", "_", name)
    key = EVENT_ALIASES.get(key, key)
    email = ev.get("email")
    if key in NO_RECIPIENT_EVENTS and not (isinstance(email, str) and email.strip()):
        raise _NoRecipient()
    try:
        ts = parse_timestamp(ev.get("timestamp"))
        email_hash, domain = recipient_fields(ctx, email)
    except RecordError as exc:  # say which event lacked it
        raise RecordError(f"{_short(word.strip())} event: {exc}") from None
    event_type = EVENT_MAP.get(key, "unknown")
    mid = message_id(ev)

    bounce_class = None
    if event_type == "bounce":
        btype = text(ev.get("type"))
        bounce_class = BOUNCE_TYPE_CLASS.get(btype.lower(), "hard") if btype else "hard"

    url = redact_addresses(text(ev.get("url")))
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
        reason=redact_addresses(text(ev.get("reason")) or text(ev.get("response"))),
        smtp_status=text(ev.get("status")),
        url=url,
        attempt=text(ev.get("attempt")),
    )
