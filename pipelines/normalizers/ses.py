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
``mail.destination`` only where the record type has no per-recipient list (Send, Reject,
Rendering Failure, Open, Click, Subscription).

Messages about the set-up rather than a mail (SNS ``SubscriptionConfirmation`` /
``UnsubscribeConfirmation``, SES ``AmazonSnsSubscriptionSucceeded``, SES's plain-text
"Successfully validated SNS topic" notification, an empty ``receive-message`` dump) carry
no event: they are counted as records without an event, never dead-lettered. So are SES
email-receiving notifications (``notificationType: Received``): they report mail that
*arrived* (a receipt rule ran), not the fate of mail that was sent, and teams often point
receiving and sending notifications at one topic.

When it happened: the type's own ``timestamp`` (``bounce.timestamp``, ...); Send, Reject
and Rendering Failure have none, their time is the mail's (``mail.timestamp``, when it was
sent). A record of another type without a time of its own, inside an SNS envelope, takes
the envelope's ``Timestamp`` (when SNS published it, seconds after the event), not the
send time, which can be days earlier; bare, it falls back to ``mail.timestamp``.

Reasons and clicked links can quote an address; it is redacted (``[redacted]@domain``).
"""

from __future__ import annotations

from typing import Any

from ..events import deterministic_event_id
from ..records import parse_json
from .base import (
    NormalizeSettings,
    RecordError,
    Result,
    base_event,
    parse_iso_ts,
    recipient_fields,
    redact_addresses,
    text,
)

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

#: ``eventType`` -> the key of its type-specific object. Quirk: ``Rendering Failure``
#: keeps its details under ``failure``; every other key is the type, first letter lowered.
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

#: type -> the per-recipient list inside its payload (types not listed: ``mail.destination``)
RECIPIENT_LIST = {
    "Bounce": "bouncedRecipients",
    "Complaint": "complainedRecipients",
    "Delivery": "recipients",
    "DeliveryDelay": "delayedRecipients",
}

BOUNCE_CLASS = {"Permanent": "hard", "Transient": "soft", "Undetermined": "undetermined"}

#: SES notifications about the set-up, not a mail.
NO_EVENT_NOTIFICATIONS = frozenset({"AmazonSnsSubscriptionSucceeded"})
#: SES email receiving (inbound): a receipt, not a sending event (see the module docstring).
RECEIPT_NOTIFICATIONS = frozenset({"Received"})
#: Types whose own time is the mail's: their payload has no ``timestamp``.
MAIL_TIME_TYPES = frozenset({"Send", "Reject", "Rendering Failure"})
#: SNS message types that are about the subscription, not a notification.
SNS_NO_EVENT_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
#: Quirk: when an event destination topic is set up, SES publishes a plain-text (not JSON)
#: SNS Notification "Successfully validated SNS topic for Amazon SES event publishing."
SNS_SETUP_MESSAGE_PREFIX = "Successfully validated SNS topic for Amazon SES"

#: SQS Body -> SNS envelope -> SES record: at most this many envelopes are peeled.
_MAX_ENVELOPES = 3


def looks_like(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    return (
        "eventType" in doc
        or "notificationType" in doc
        or ("Type" in doc and ("Message" in doc or "TopicArn" in doc))
        or isinstance(doc.get("Body"), str)
        or isinstance(doc.get("Messages"), list)
    )


def normalize(doc: dict[str, Any], ctx: NormalizeSettings) -> Result:
    if not isinstance(doc, dict):
        return Result().dead(f"not an SES record: {_json_type(doc)}", doc, PROVIDER)
    if _is_receive_dump(doc):
        return _receive_dump(doc["Messages"], ctx)
    return _one(doc, ctx)


def _is_receive_dump(doc: dict[str, Any]) -> bool:
    """``aws sqs receive-message`` output: ``{"Messages": [{"Body": ...}, ...]}``."""
    return (
        isinstance(doc.get("Messages"), list)
        and "eventType" not in doc
        and "notificationType" not in doc
        and "Type" not in doc
    )


def _receive_dump(messages: list[Any], ctx: NormalizeSettings) -> Result:
    res = Result()
    if not messages:
        return res.skip()  # an empty receive (the queue was drained): no event
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            res.dead(f"Messages[{i}] is not an SQS message object", msg, PROVIDER, i)
            continue
        try:
            one = _one(msg, ctx)
        except Exception as exc:  # noqa: BLE001 - one bad message must not sink the dump
            one = Result().dead(f"ses normalizer error: {type(exc).__name__}: {exc}", msg, PROVIDER)
        for dl in one.dead_letters:
            dl.reason = f"Messages[{i}]: {dl.reason}"
            dl.record_index = i
        res.extend(one)
    return res


def _one(doc: dict[str, Any], ctx: NormalizeSettings) -> Result:
    """One SES record, bare or in its envelopes; dead letters keep the outer record as raw."""
    try:
        inner, envelope_ts = _unwrap(doc)
    except RecordError as exc:
        return Result().dead(str(exc), doc, PROVIDER)
    if inner is None:
        return Result().skip()
    return _record(inner, ctx, raw=doc, envelope_ts=envelope_ts)


def _unwrap(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """Peel SQS and SNS envelopes: (the SES record or None for messages that carry no
    event, the ``Timestamp`` of the innermost SNS envelope or None)."""
    envelope_ts = None
    for _ in range(_MAX_ENVELOPES):
        if "eventType" in doc or "notificationType" in doc:
            return doc, envelope_ts
        if "Type" in doc:  # an SNS envelope
            sns_type = doc.get("Type")
            if sns_type in SNS_NO_EVENT_TYPES:
                return None, None
            if sns_type != "Notification":
                raise RecordError(
                    f"unknown SNS message Type {sns_type!r} (expected Notification, "
                    "SubscriptionConfirmation or UnsubscribeConfirmation)"
                )
            message = doc.get("Message")
            if isinstance(message, str) and message.strip().startswith(SNS_SETUP_MESSAGE_PREFIX):
                return None, None
            envelope_ts = doc.get("Timestamp")
            doc = _embedded_object(message, "SNS Message")
        elif "Body" in doc:  # an SQS message
            doc = _embedded_object(doc.get("Body"), "SQS message Body")
        else:
            break
    if "eventType" in doc or "notificationType" in doc:
        return doc, envelope_ts
    raise RecordError("no SES record: neither eventType nor notificationType in " + _describe(doc))


def _embedded_object(value: Any, what: str) -> dict[str, Any]:
    """The JSON object an envelope carries as a string (or, in some dumps, already decoded)."""
    if isinstance(value, dict):
        return value
    if value is None:
        raise RecordError(f"{what} is missing")
    if not isinstance(value, str):
        raise RecordError(f"{what} is {_json_type(value)}, not a JSON string")
    # The same parser as a record read from a file line, so a record reads the same bare or
    # in an envelope (e.g. integers beyond 64 bits).
    inner, error = parse_json(value.encode("utf-8", "surrogatepass"))
    if error is not None:
        raise RecordError(
            f"{what} is {error}" if error.startswith("not ") else f"{what} is not JSON ({error})"
        )
    if not isinstance(inner, dict):
        raise RecordError(f"{what} holds {_json_type(inner)}, not an SES record object")
    return inner


def _record(
    doc: dict[str, Any], ctx: NormalizeSettings, raw: Any, envelope_ts: Any = None
) -> Result:
    res = Result()
    field = "eventType" if "eventType" in doc else "notificationType"
    word = doc.get(field)
    if not isinstance(word, str) or not word.strip():
        return res.dead(f"{field} is {_json_type(word)}, not an SES event name", raw, PROVIDER)
    word = word.strip()
    if word in NO_EVENT_NOTIFICATIONS or word in RECEIPT_NOTIFICATIONS:
        return res.skip()
    mail = doc.get("mail")
    if not isinstance(mail, dict):
        return res.dead(f"{word} record has no mail object", raw, PROVIDER)
    key = PAYLOAD_KEY.get(word, _lower_first(word))
    payload = doc.get(key)
    if not isinstance(payload, dict):
        payload = {}

    ts_field, ts_value = _time_of(word, key, payload, mail, envelope_ts)
    try:
        ts = parse_iso_ts(ts_value)
    except RecordError as exc:
        return res.dead(f"{word} record: {ts_field}: {exc}", raw, PROVIDER)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        return res.dead(
            f"{word} record: {ts_field}: timestamp out of range: {ts_value!r}", raw, PROVIDER
        )

    try:
        source, recipients = _recipients(word, key, payload, mail)
    except RecordError as exc:
        return res.dead(str(exc), raw, PROVIDER)

    mid = text(mail.get("messageId"))
    categories = _tag_values(mail.get("tags"), ctx.ses_category_tag)
    event_type = EVENT_MAP.get(word, "unknown")
    bounce_class = (
        BOUNCE_CLASS.get(text(payload.get("bounceType")) or "", "undetermined")
        if event_type == "bounce"
        else None
    )
    url = redact_addresses(text(payload.get("link"))) if word == "Click" else None

    for i, rcpt in enumerate(recipients):
        address = rcpt.get("emailAddress") if isinstance(rcpt, dict) else rcpt
        try:
            email_hash, domain = recipient_fields(ctx, address)
        except RecordError:
            what = (
                "has no emailAddress"
                if isinstance(rcpt, dict)
                else f"is {_json_type(rcpt)}, not an address"
            )
            res.dead(f"{word} record: {source}[{i}] {what}", raw, PROVIDER, i)
            continue
        per = rcpt if isinstance(rcpt, dict) else {}
        reason, status = _reason_status(word, payload, per)
        reason = redact_addresses(reason)
        res.add(
            base_event(
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
            )
        )
    return res


def _time_of(word: str, key: str, payload: dict, mail: dict, envelope_ts: Any) -> tuple[str, Any]:
    """(where the time came from, its value): see "When it happened" above."""
    own = payload.get("timestamp")
    if own not in (None, ""):
        return f"{key}.timestamp", own
    sent = mail.get("timestamp")
    if word in MAIL_TIME_TYPES and sent not in (None, ""):
        return "mail.timestamp", sent
    if envelope_ts not in (None, ""):
        return "SNS Timestamp", envelope_ts
    return "mail.timestamp", sent


def _recipients(word: str, key: str, payload: dict, mail: dict) -> tuple[str, list]:
    """(where the list came from, the affected recipients); RecordError when none."""
    list_key = RECIPIENT_LIST.get(word)
    destination = mail.get("destination")
    if list_key is not None:
        listed = payload.get(list_key)
        if isinstance(listed, list) and listed:
            return f"{key}.{list_key}", listed
        # Quirk: a record whose per-recipient list is missing. Only a single-recipient
        # mail says who was affected; with several, blaming all of them would be wrong.
        if isinstance(destination, list) and len(destination) == 1:
            return "mail.destination", destination
        n = len(destination) if isinstance(destination, list) else 0
        raise RecordError(
            f"{word} record has no {key}.{list_key} and mail.destination names {n} "
            "recipients: cannot tell which were affected"
        )
    if not isinstance(destination, list) or not destination:
        raise RecordError(
            f"{word} record names no recipient (mail.destination is "
            f"{'empty' if destination == [] else _json_type(destination)})"
        )
    return "mail.destination", destination


def _reason_status(word: str, payload: dict, per: dict) -> tuple[str | None, str | None]:
    if word == "Bounce":
        return (
            text(per.get("diagnosticCode")) or text(payload.get("bounceSubType")),
            text(per.get("status")),
        )
    if word == "DeliveryDelay":
        return (
            text(per.get("diagnosticCode")) or text(payload.get("delayType")),
            text(per.get("status")),
        )
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
    """``mail.tags`` is a map of arrays (``{"category": ["welcome"]}``); a bare string is
    accepted too. Values trimmed, order kept, duplicates dropped."""
    if not isinstance(tags, dict):
        return []
    values = tags.get(key)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return []
    out: list[str] = []
    for v in values:
        s = text(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None
        if s and s not in out:
            out.append(s)
    return out


def _lower_first(word: str) -> str:
    return word[:1].lower() + word[1:].replace(" ", "")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _describe(doc: dict[str, Any]) -> str:
    keys = sorted(map(str, doc))
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
    return f"an object with keys [{shown}]"
