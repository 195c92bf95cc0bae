"""Amazon SES: event publishing records and SES notifications.

Shapes read here:

- event publishing (``eventType``), as Kinesis Firehose writes them to S3 (one per line);
- SES notifications (``notificationType``: Bounce, Complaint, Delivery);
- either of those inside an SNS envelope (``{"Type": "Notification", "Message": "<json>"}``),
  and that envelope inside an SQS message (``Body``) or a ``receive-message`` dump
  (``{"Messages": [...]}``), as teams dump their SQS queues.

One mail can have several recipients: ``mail.destination`` lists all of them, while the
per-type lists (``bouncedRecipients``, ``complainedRecipients``, ``delivery.recipients``,
``delayedRecipients``) name the affected ones. One event per affected recipient;
``mail.destination`` only where the record has no per-recipient list.
"""
from __future__ import annotations

from typing import Any

import orjson

from ..events import deterministic_event_id
from .base import (NormalizeContext, RecordError, Result, base_event, parse_iso_ts,
                   recipient_fields, text)

PROVIDER = "ses"

#: SES ``eventType`` / ``notificationType`` -> canonical event_type
EVENT_MAP = {
    "Send": "processed",
    "Reject": "dropped",
    "Rendering Failure": "dropped",
    "Delivery": "delivered",
    "DeliveryDelay": "deferred",
    "Bounce": "bounce",
    "Complaint": "spamreport",
    "Open": "open",
    "Click": "click",
    "Subscription": "unsubscribe",
}

#: ``eventType`` -> the key of its type-specific object
PAYLOAD_KEY = {
    "Send": "send",
    "Reject": "reject",
    "Rendering Failure": "failure",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Open": "open",
    "Click": "click",
    "Subscription": "subscription",
}

#: type -> the per-recipient list inside its payload (absent: ``mail.destination``)
RECIPIENT_LIST = {
    "Bounce": "bouncedRecipients",
    "Complaint": "complainedRecipients",
    "Delivery": "recipients",
    "DeliveryDelay": "delayedRecipients",
}

BOUNCE_CLASS = {"Permanent": "hard", "Transient": "soft", "Undetermined": "undetermined"}

#: Notifications SES (and SNS) send that are about the setup, not a mail.
NO_EVENT_NOTIFICATIONS = frozenset({"AmazonSnsSubscriptionSucceeded"})
SNS_NO_EVENT_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})


def looks_like(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    return ("eventType" in doc or "notificationType" in doc
            or ("Type" in doc and ("Message" in doc or "TopicArn" in doc))
            or isinstance(doc.get("Body"), str)
            or isinstance(doc.get("Messages"), list))


def normalize(doc: dict[str, Any], ctx: NormalizeContext) -> Result:
    # SQS receive-message dump: several messages, each a record of its own.
    if isinstance(doc.get("Messages"), list) and "eventType" not in doc:
        res = Result()
        for i, msg in enumerate(doc["Messages"]):
            if not isinstance(msg, dict):
                res.dead(f"SQS message {i} is not an object", msg, PROVIDER, i)
            else:
                res.extend(_reindex(normalize(msg, ctx), i))
        return res
    try:
        inner = _unwrap(doc)
    except RecordError as exc:
        return Result().dead(str(exc), doc, PROVIDER)
    if inner is None:
        return Result().skip()
    return _record(inner, ctx)


def _reindex(res: Result, index: int) -> Result:
    for dl in res.dead_letters:
        dl.record_index = index
    return res


def _loads_embedded(value: Any, what: str) -> Any:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise RecordError(f"{what} is not a JSON string")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise RecordError(f"{what} is not JSON") from None


def _unwrap(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Peel SQS and SNS envelopes; None for messages that carry no event."""
    for _ in range(3):  # SQS Body -> SNS envelope -> SES record
        if "eventType" in doc or "notificationType" in doc:
            return doc
        if isinstance(doc.get("Body"), str) and "Type" not in doc:
            doc = _loads_embedded(doc["Body"], "SQS Body")
        elif "Type" in doc:
            if doc.get("Type") in SNS_NO_EVENT_TYPES:
                return None
            if doc.get("Type") != "Notification":
                raise RecordError(f"unknown SNS message type {doc.get('Type')!r}")
            doc = _loads_embedded(doc.get("Message"), "SNS Message")
        else:
            break
        if not isinstance(doc, dict):
            raise RecordError("envelope does not hold a JSON object")
    if "eventType" in doc or "notificationType" in doc:
        return doc
    raise RecordError("SES record has neither eventType nor notificationType")


def _record(doc: dict[str, Any], ctx: NormalizeContext) -> Result:
    res = Result()
    word = doc.get("eventType", doc.get("notificationType"))
    if not isinstance(word, str) or not word.strip():
        return res.dead("missing eventType / notificationType", doc, PROVIDER)
    word = word.strip()
    if word in NO_EVENT_NOTIFICATIONS:
        return res.skip()
    mail = doc.get("mail")
    if not isinstance(mail, dict):
        return res.dead("SES record has no mail object", doc, PROVIDER)
    payload = doc.get(PAYLOAD_KEY.get(word, _lower_first(word)))
    if not isinstance(payload, dict):
        payload = {}

    try:
        ts = parse_iso_ts(payload.get("timestamp") or mail.get("timestamp"))
    except RecordError as exc:
        return res.dead(str(exc), doc, PROVIDER)

    recipients = None
    list_key = RECIPIENT_LIST.get(word)
    if list_key is not None and isinstance(payload.get(list_key), list) and payload[list_key]:
        recipients = payload[list_key]
    if recipients is None:
        recipients = mail.get("destination")
    if not isinstance(recipients, list) or not recipients:
        return res.dead("SES record names no recipient (no per-recipient list, no "
                        "mail.destination)", doc, PROVIDER)

    mid = text(mail.get("messageId"))
    categories = _tag_values(mail.get("tags"), ctx.ses_category_tag)
    event_type = EVENT_MAP.get(word, "unknown")
    bounce_class = BOUNCE_CLASS.get(text(payload.get("bounceType")) or "", "undetermined") \
        if event_type == "bounce" else None
    url = text(payload.get("link")) if word == "Click" else None

    for i, rcpt in enumerate(recipients):
        try:
            address = rcpt.get("emailAddress") if isinstance(rcpt, dict) else rcpt
            email_hash, domain = recipient_fields(ctx, address)
        except RecordError as exc:
            res.dead(f"{exc} (recipient {i})", rcpt, PROVIDER, i)
            continue
        per = rcpt if isinstance(rcpt, dict) else {}
        reason, status = _reason_status(word, payload, per)
        res.add(base_event(
            ctx,
            event_id=deterministic_event_id(PROVIDER, mid, word, email_hash, ts, url or ""),
            provider=PROVIDER,
            event_type=event_type,
            provider_event_type=word,
            bounce_class=bounce_class,
            event_ts=ts,
            message_id=mid,
            email_hash=email_hash,
            recipient_domain=domain,
            categories=categories,
            reason=reason,
            smtp_status=status,
            url=url,
        ))
    return res


def _reason_status(word: str, payload: dict, per: dict) -> tuple[str | None, str | None]:
    if word == "Bounce":
        return (text(per.get("diagnosticCode")) or text(payload.get("bounceSubType")),
                text(per.get("status")))
    if word == "DeliveryDelay":
        return (text(per.get("diagnosticCode")) or text(payload.get("delayType")),
                text(per.get("status")))
    if word == "Complaint":
        return text(payload.get("complaintFeedbackType")), None
    if word == "Delivery":
        return text(payload.get("smtpResponse")), None
    if word == "Reject":
        return text(payload.get("reason")), None
    if word == "Rendering Failure":
        return text(payload.get("errorMessage")), None
    return None, None


def _tag_values(tags: Any, key: str) -> list[str]:
    if not isinstance(tags, dict):
        return []
    values = tags.get(key)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return []
    out: list[str] = []
    for v in values:
        s = text(v) if isinstance(v, (str, int, float)) else None
        if s and s not in out:
            out.append(s)
    return out


def _lower_first(word: str) -> str:
    return word[:1].lower() + word[1:].replace(" ", "")
