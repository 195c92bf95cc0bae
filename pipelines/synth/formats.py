"""Provider-native record fragments: the constant SendGrid, SES and CMC fields (bounce
reasons, SMTP responses, user agents) the generator splices into records, and corrupt lines.
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson


def _sg_extra(**fields: Any) -> bytes:
    """Constant SendGrid fields as ``"k":v,`` bytes to splice into an event."""
    return orjson.dumps(fields)[1:-1] + b","


_SG_DROPPED = tuple(
    _sg_extra(reason=r, status="5.0.0")
    for r in ("Bounced Address", "Unsubscribed Address", "Spam Reporting Address", "Invalid")
)
_SG_DEFERRED = tuple(
    _sg_extra(response=r)
    for r in (
        "421 4.7.0 Temporary System Problem. Try again later.",
        "451 4.7.1 Greylisted, please try again in 5 minutes",
        "452 4.2.2 Mailbox full, try again later",
    )
)
_SG_DELIVERED = _sg_extra(
    ip="149.72.1.17",
    tls=1,
    response="250 2.0.0 OK  1700000000 d9443c01a7336-2a1b2c3d4e5f6si.123 - gsmtp",
)
_SG_BLOCKED = _sg_extra(
    type="blocked",
    status="5.7.1",
    bounce_classification="Reputation",
    reason="554 5.7.1 Service unavailable; Client host [149.72.1.17] blocked using zen.spamhaus.org",
)
_SG_EXPIRED = _sg_extra(
    type="bounce",
    status="4.4.7",
    bounce_classification="Technical",
    reason="421 4.4.7 Deferred for too long: message expired after 72 hours",
)
_SG_NO_HOST = _sg_extra(
    type="bounce",
    status="5.1.2",
    bounce_classification="Invalid Address",
    reason="550 5.1.2 Host or domain name not found",
)
_SG_NO_USER = _sg_extra(
    type="bounce",
    status="5.1.1",
    bounce_classification="Invalid Address",
    reason="550 5.1.1 The email account that you tried to reach does not exist.",
)
_SES_DELAY = (b"TransientCommunicationFailure", b"MailboxFull", b"RecipientServerError")
# (bounceType, bounceSubType, status, diagnosticCode as JSON)
_SES_NO_USER = (b"Permanent", b"General", b"5.1.1", b'"smtp; 550 5.1.1 user unknown"')
_SES_SUPPRESSED = (
    b"Permanent",
    b"OnAccountSuppressionList",
    b"5.1.1",
    b'"Amazon SES did not send the message to this address because it is on the '
    b'suppression list for your account."',
)
_SES_EXPIRED = (b"Transient", b"General", b"4.4.7", b'"smtp; 421 4.4.7 message expired"')
_SES_REJECTED = (
    b"Transient",
    b"ContentRejected",
    b"5.7.1",
    b'"smtp; 554 5.7.1 Message rejected by policy"',
)
_SES_FULL = (b"Transient", b"MailboxFull", b"4.2.2", b'"smtp; 452 4.2.2 Mailbox full"')
# CMC bounce (status code, reason): the failed delivery's reason classifies the same way
# as the code (5.x.x hard, 4.x.x soft) or has no SMTP code at all (undetermined).
_CMC_NO_HOST = (b"1", b"host unknown")
_CMC_NO_USER = (b"2", b"550 5.1.1 The email account that you tried to reach does not exist.")
_CMC_TIMEOUT = (b"3", b"retransmission timeout")
_CMC_FULL = (b"5", b"452 4.2.2 The email account that you tried to reach is over quota.")
_CMC_POLICY = (b"4", b"rejected by the receiver's policy")
_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
)
_UA_JSON = tuple(orjson.dumps(u) for u in _UA)
_GARBAGE = (
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    b"ping",
    b"--boundary--",
    b'{"event": "delivered", "email": ',
)


def _url(category: str, n: int) -> str:
    return (
        f"https://www.example.com/{category}/item/{n % 50}?utm_source=mail&utm_campaign={category}"
    )


def _uuid(s: bytes) -> str:
    h = binascii.a2b_base64(s + b"==")[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
