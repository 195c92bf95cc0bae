"""Amazon SNS HTTP(S) notifications: message signature verification.

SNS signs a canonical string built from the message's fields ("Key\\nValue\\n" in a
fixed order, per the SNS developer guide "Verifying the signatures of Amazon SNS
messages"): for ``Notification`` Message, MessageId, Subject (only when present),
Timestamp, TopicArn, Type; for ``SubscriptionConfirmation`` and
``UnsubscribeConfirmation`` Message, MessageId, SubscribeURL, Timestamp, Token,
TopicArn, Type. ``SignatureVersion`` 1 is RSA PKCS#1 v1.5 with SHA-1, 2 with SHA-256.

The signing certificate is taken only from ``https://sns.<region>.amazonaws.com/...pem``
(the host checked exactly, redirects refused) and cached per URL. With a certificate
directory the certificate is read from ``<dir>/<file name of the URL>`` and never
fetched (offline use, tests). With CA certificates configured the signing
certificate must be issued directly by one of them.

A valid SNS signature proves the message came from SNS, not that it came from *your*
topic: anyone can subscribe your endpoint to their own topic. So messages are accepted
only from the configured topic ARNs.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .verification import Rejection, strict_b64decode

log = logging.getLogger("mailpulse.collector")

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
MAX_CERT_BYTES = 64 * 1024


def check_sns_url(url: Any, *, pem: bool) -> str:
    """The URL if it is ``https://sns.<region>.amazonaws.com/...`` (no user info, no
    port other than 443, and for certificates a ``.pem`` path); else Rejection."""
    if not isinstance(url, str) or not url:
        raise Rejection("bad_cert_url", "no URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Rejection("bad_cert_url", "unparseable URL") from None
    host = parts.hostname or ""
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not SNS_HOST.match(host)
        or parts.netloc.lower() not in (host, f"{host}:443")
    ):
        raise Rejection(
            "bad_cert_url", f"not an https://sns.<region>.amazonaws.com URL (host {host!r})"
        )
    if pem and not parts.path.endswith(".pem"):
        raise Rejection("bad_cert_url", "certificate URL does not name a .pem file")
    return url


def canonical_string(msg: dict[str, Any]) -> bytes:
    keys = NOTIFICATION_KEYS if msg.get("Type") == "Notification" else CONFIRMATION_KEYS
    out = []
    for k in keys:
        v = msg.get(k)
        if v is None:
            if k == "Subject":
                continue
            raise Rejection("bad_request", f"SNS message has no {k}")
        if not isinstance(v, str):
            raise Rejection("bad_request", f"SNS field {k} is not a string")
        out.append(f"{k}\n{v}\n")
    return "".join(out).encode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None  # a redirect could lead off the checked host


def fetch_url(url: str, timeout: float = 5.0) -> bytes:
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(url, timeout=timeout) as resp:
        data = resp.read(MAX_CERT_BYTES + 1)
    if len(data) > MAX_CERT_BYTES:
        raise ValueError("certificate response too large")
    return data


class SnsVerifier:
    def __init__(
        self,
        topic_arns: list[str],
        *,
        cert_dir: Path | str | None = None,
        ca_certs: list[x509.Certificate] | None = None,
        fetch: Callable[[str], bytes] = fetch_url,
        clock: Callable[[], datetime] | None = None,
    ):
        self.topic_arns = frozenset(a.strip() for a in topic_arns if a.strip())
        self.cert_dir = Path(cert_dir) if cert_dir else None
        self.ca_certs = ca_certs or []
        self.fetch = fetch
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cert = self._certs.get(url)
        if cert is not None:
            return cert
        if self.cert_dir is not None:
            name = Path(urlsplit(url).path).name
            try:
                data = (self.cert_dir / name).read_bytes()
            except OSError:
                raise Rejection(
                    "bad_cert_url", f"certificate {name} is not in the certificate directory"
                ) from None
        else:
            try:
                data = self.fetch(url)
            except (OSError, ValueError, urllib.error.URLError) as exc:
                raise Rejection(
                    "bad_cert_url", f"cannot fetch the signing certificate: {exc}"
                ) from None
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise Rejection(
                "bad_cert_url", "signing certificate is not a PEM certificate"
            ) from None
        if self.ca_certs and not any(_issued_by(cert, ca) for ca in self.ca_certs):
            raise Rejection("bad_signature", "signing certificate is not issued by a trusted CA")
        with self._lock:
            self._certs[url] = cert
        return cert

    def verify(self, msg: Any) -> dict[str, Any]:
        """Check an SNS message (parsed JSON); returns it, or raises Rejection."""
        if not isinstance(msg, dict) or msg.get("Type") not in MESSAGE_TYPES:
            raise Rejection("bad_request", "not an SNS message (Type missing or unknown)")
        if msg.get("TopicArn") not in self.topic_arns:
            raise Rejection(
                "unknown_topic", f"topic {str(msg.get('TopicArn'))[:200]!r} is not configured"
            )
        version = msg.get("SignatureVersion")
        algo = {"1": hashes.SHA1, "2": hashes.SHA256}.get(version)
        if algo is None:
            raise Rejection(
                "malformed_signature", f"unsupported SignatureVersion {str(version)[:8]!r}"
            )
        if not isinstance(msg.get("Signature"), str):
            raise Rejection("unsigned", "no Signature")
        try:
            sig = strict_b64decode(msg["Signature"])
        except ValueError as exc:
            raise Rejection("malformed_signature", f"Signature {exc}") from None
        url = check_sns_url(msg.get("SigningCertURL"), pem=True)
        canonical = canonical_string(msg)
        cert = self.certificate(url)
        now = self.clock()
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise Rejection("bad_signature", "signing certificate is not valid now")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Rejection("bad_signature", "signing certificate has no RSA key")
        try:
            key.verify(sig, canonical, padding.PKCS1v15(), algo())
        except InvalidSignature:
            raise Rejection("bad_signature", "SNS signature does not verify") from None
        return msg


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def load_ca_file(path: Path | str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())
