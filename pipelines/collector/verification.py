"""Who may post: SendGrid's Signed Event Webhook, HTTP Basic auth, the CMC api_key.

Every check raises :class:`Rejection` with a reason from :data:`REASONS` (the counter
name and the HTTP status) and a detail for the log. Details never contain the body or
a secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from typing import Callable, Iterable
from urllib.parse import unquote_plus

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: SendGrid retries a failed post for up to 24 hours. If a retry carries the timestamp
#: of its first attempt, any limit below 24 h would reject genuine retries and lose
#: their events for good, while a replayed body only adds duplicates that the load
#: job removes by ``sg_event_id``. So the default accepts 24 h plus one hour for clock
#: skew and queueing. Deployments that see fresh timestamps on retries can tighten it.
DEFAULT_SIGNATURE_MAX_AGE = 25 * 3600
#: A signature timestamp may be this far ahead of our clock (skew), not more.
MAX_FUTURE_SKEW = 300

#: reason -> HTTP status. Counters at /healthz use the same names.
REASONS = {
    "not_configured": 404,
    "unauthenticated": 401,
    "unsigned": 401,
    "malformed_signature": 400,
    "bad_signature": 403,
    "too_old": 403,
    "future_timestamp": 403,
    "bad_cert_url": 403,
    "unknown_topic": 403,
    "too_large": 413,
    "timeout": 408,
    "overloaded": 503,
    "not_json": 400,
    "bad_request": 400,
}


class Rejection(Exception):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.status = REASONS[reason]


class KeyConfigError(ValueError):
    """A configured public key that cannot be read (a configuration error)."""


def strict_b64decode(value: str) -> bytes:
    """Standard base64 with padding; anything else (URL-safe alphabet, stray characters,
    missing padding) is refused rather than silently skipped."""
    v = value.strip()
    if not v or len(v) % 4:
        raise ValueError("not base64 (length is not a multiple of 4)")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from None


def load_sendgrid_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A key as SendGrid shows it (base64 of the DER SubjectPublicKeyInfo) or as PEM."""
    t = text.strip()
    try:
        if "BEGIN PUBLIC KEY" in t:
            key = serialization.load_pem_public_key(t.encode())
        else:
            key = serialization.load_der_public_key(strict_b64decode(t))
    except ValueError as exc:
        raise KeyConfigError(f"cannot read SendGrid public key {t[:12]}...: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyConfigError(f"SendGrid public key {t[:12]}... is not an ECDSA P-256 key")
    return key


def parse_public_keys(value: str | Iterable[str]) -> list[ec.EllipticCurvePublicKey]:
    """``MAILPULSE_SENDGRID_PUBLIC_KEYS``: comma-separated (a PEM holds no comma)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [load_sendgrid_public_key(k) for k in items if k.strip()]


class SendGridVerifier:
    """ECDSA P-256 / SHA-256 over ``timestamp header + raw body``; any configured key
    may match (rotation). ``max_age`` seconds, 0 disables the age check."""

    _TS = re.compile(r"^[0-9]{1,12}$")

    def __init__(
        self,
        keys: list[ec.EllipticCurvePublicKey],
        max_age: int = DEFAULT_SIGNATURE_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ):
        if not keys:
            raise KeyConfigError("no SendGrid public key configured")
        self.keys = keys
        self.max_age = max_age
        self.clock = clock

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> None:
        if not signature or not timestamp:
            missing = SIGNATURE_HEADER if not signature else TIMESTAMP_HEADER
            raise Rejection("unsigned", f"missing {missing}")
        ts = timestamp.strip()
        if not self._TS.match(ts):
            raise Rejection("malformed_signature", "timestamp header is not epoch seconds")
        try:
            sig = strict_b64decode(signature)
        except ValueError as exc:
            raise Rejection("malformed_signature", f"signature header {exc}") from None
        signed = timestamp.encode("latin-1") + body
        for key in self.keys:
            try:
                key.verify(sig, signed, ec.ECDSA(hashes.SHA256()))
                break
            except InvalidSignature:
                continue
        else:
            raise Rejection(
                "bad_signature", f"no configured key verifies it ({len(self.keys)} tried)"
            )
        if self.max_age:
            age = self.clock() - int(ts)
            if age > self.max_age:
                raise Rejection("too_old", f"signed {int(age)} s ago, limit {self.max_age} s")
            if age < -MAX_FUTURE_SKEW:
                raise Rejection("future_timestamp", f"signed {int(-age)} s in the future")


def parse_basic_credentials(value: str) -> tuple[str, str]:
    """``user:password`` (the password may contain ':')."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("Basic auth credentials must look like USER:PASSWORD")
    return user, password


def check_basic_auth(header: str | None, expected: tuple[str, str]) -> None:
    if not header or not header[:6].lower() == "basic ":
        raise Rejection("unauthenticated", "no Basic credentials")
    try:
        decoded = strict_b64decode(header[6:]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise Rejection("unauthenticated", "unreadable Basic credentials") from None
    user, _, password = decoded.partition(":")
    ok_user = hmac.compare_digest(user.encode(), expected[0].encode())
    ok_pass = hmac.compare_digest(password.encode(), expected[1].encode())
    if not (ok_user and ok_pass):
        raise Rejection("unauthenticated", "wrong Basic credentials")


def form_field(body: bytes, name: bytes, max_len: int = 4096) -> str | None:
    """The last value of field ``name`` in an ``application/x-www-form-urlencoded`` body,
    found without parsing the rest of the form (work: a few linear byte searches, whatever
    the body holds; ``parse_qs`` keeps the last value too). None when the field is absent,
    unreadable or longer than ``max_len`` bytes."""
    key = name + b"="
    at = body.rfind(b"&" + key)
    start = at + 1 + len(key) if at >= 0 else (len(key) if body.startswith(key) else -1)
    if start < 0:
        return None
    end = body.find(b"&", start)
    stop = len(body) if end < 0 else end
    if stop - start > max_len:  # not a credential: do not decode megabytes to compare them
        return None
    try:
        return unquote_plus(body[start:stop].decode("ascii"), errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None


def check_api_key(given: str | None, expected: str) -> None:
    if not given:
        raise Rejection("unauthenticated", "no api_key")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise Rejection("unauthenticated", "wrong api_key")


#: Query parameter names shown as they are in the access log; values never are.
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,40}$")


def redact_target(target: str, max_path: int = 200) -> str:
    """A request target as the access log shows it: every query value replaced by
    ``[redacted]`` (``api_key``, ``token``, ``signature``, ... and anything else: a query
    value is never needed to read the log), user info and host of an absolute URL dropped,
    the path cut at ``max_path`` characters."""
    path, sep, query = target.partition("?")
    if "://" in path:
        rest = path.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if len(path) > max_path:
        path = path[:max_path] + "..."
    if not sep:
        return path
    items = []
    for item in query.split("&")[:20]:
        name, eq, _ = item.partition("=")
        items.append(f"{name}=[redacted]" if eq and _PARAM_NAME.match(name) else "[redacted]")
    if query.count("&") >= 20:
        items.append("...")
    return path + "?" + "&".join(items)
