"""SES notifications through SNS at POST /webhooks/ses.

A test certificate authority and an SNS-like signing certificate are generated here with
``cryptography``; messages are signed the way SNS signs them (SignatureVersion 1: SHA1,
2: SHA256, RSA PKCS#1 v1.5 over the canonical string) and the certificate is served
from the configured certificate directory.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from collector_support import archived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pipelines.collector import CollectorConfig, create_app
from pipelines.collector.sns import canonical_string, check_sns_url
from pipelines.collector.verification import Rejection
from pipelines.normalizers import normalize_records
from pipelines.records import iter_records

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_NAME = "SimpleNotificationService-0123456789abcdef.pem"
CERT_URL = f"https://sns.us-east-1.amazonaws.com/{CERT_NAME}"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)

SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "nobody@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2026-11-23T09:59:00.000Z",
        "feedbackId": "fb-1",
    },
    "mail": {
        "timestamp": "2026-11-23T09:58:00.000Z",
        "source": "news@example.org",
        "messageId": "0100018c-aaaa-bbbb",
        "destination": ["nobody@example.com"],
        "tags": {"category": ["welcome"]},
    },
}


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn="mailpulse test CA"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_signing_cert(ca_key, ca_cert, *, days_valid=(-1, 30)):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sns.amazonaws.com"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days_valid[0]))
        .not_valid_after(NOW + timedelta(days=days_valid[1]))
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki():
    ca_key, ca = make_ca()
    key, cert = make_signing_cert(ca_key, ca)
    rogue_ca_key, rogue_ca = make_ca("rogue CA")
    rogue_key, rogue_cert = make_signing_cert(rogue_ca_key, rogue_ca)
    return {
        "ca": ca,
        "key": key,
        "cert": cert,
        "rogue_key": rogue_key,
        "rogue_cert": rogue_cert,
        "ca_key": ca_key,
    }


def sns_message(
    key,
    *,
    version="1",
    type_="Notification",
    topic=TOPIC,
    cert_url=CERT_URL,
    subject=None,
    message=None,
    message_id="22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
):
    msg = {
        "Type": type_,
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": json.dumps(message if message is not None else SES_BOUNCE),
        "Timestamp": "2026-11-23T09:59:01.123Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if subject is not None:
        msg["Subject"] = subject
    if type_ != "Notification":
        msg["Message"] = f"You have chosen to subscribe to the topic {topic}."
        msg["Token"] = "2336412f37fb687f5d51e6e2425dacbba"
        msg["SubscribeURL"] = (
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic}&Token=2336412f37fb687f5d51e6e2425dacbba"
        )
    else:
        msg["UnsubscribeURL"] = "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1"
    algo = hashes.SHA1() if version == "1" else hashes.SHA256()
    msg["Signature"] = base64.b64encode(
        key.sign(canonical_string(msg), padding.PKCS1v15(), algo)
    ).decode()
    return msg


def body_of(msg) -> bytes:
    return json.dumps(msg, indent=2).encode()  # SNS posts pretty-printed JSON


@pytest.fixture
def setup(tmp_path, pki):
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / CERT_NAME).write_bytes(pem(pki["cert"]))
    fetched: list[str] = []

    def make(**cfg):
        fetch = cfg.pop("fetch", None)
        config = CollectorConfig(
            archive=str(tmp_path / "archive"),
            sns_topic_arns=[TOPIC],
            maintain_interval=0,
            **{"sns_cert_dir": str(certs), **cfg},
        )

        def recording_fetch(url):
            fetched.append(url)
            return fetch(url) if fetch else b""

        app = create_app(config, now=lambda: NOW, fetch=recording_fetch)
        return app.test_client()

    return make, tmp_path / "archive", fetched, certs


def post(client, msg, raw=None):
    return client.post(
        "/webhooks/ses",
        data=raw if raw is not None else body_of(msg),
        headers={"x-amz-sns-message-type": msg["Type"]},
        content_type="text/plain",
    )


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
def test_signed_notification_is_archived_compact_and_loads(setup, pki, ctx, version, subject):
    make, root, fetched, _ = setup
    client = make()
    msg = sns_message(pki["key"], version=version, subject=subject)
    r = post(client, msg)
    assert r.status_code == 200, r.get_json()
    [line] = archived(root)
    assert json.loads(line) == msg and b"\n" not in line
    assert fetched == []  # the certificate came from the directory
    res = normalize_records(iter_records(line + b"\n"), ctx)
    assert res.dead_letters == []
    assert [(e["event_type"], e["bounce_class"]) for e in res.events] == [("bounce", "hard")]


def test_tampered_or_foreign_signatures_are_rejected(setup, pki):
    make, root, _, _ = setup
    client = make()
    msg = sns_message(pki["key"], version="2")
    tampered = dict(msg, Message=msg["Message"].replace("nobody@", "somebody@"))
    r = post(client, tampered)
    assert (r.status_code, r.get_json()) == (403, {"error": "bad_signature"})
    # v1 signature claimed as v2
    r = post(client, dict(sns_message(pki["key"], version="1"), SignatureVersion="2"))
    assert r.status_code == 403
    # signed by a key that is not the certificate's
    r = post(client, sns_message(pki["rogue_key"], version="2"))
    assert r.status_code == 403
    r = post(client, dict(msg, SignatureVersion="3"))
    assert (r.status_code, r.get_json()) == (400, {"error": "malformed_signature"})
    r = post(client, dict(msg, Signature="not*base64"))
    assert r.status_code == 400
    unsigned = {k: v for k, v in msg.items() if k != "Signature"}
    assert post(client, unsigned).status_code == 401
    assert archived(root) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/" + CERT_NAME,
        "https://sns.us-east-1.amazonaws.com.evil.example/" + CERT_NAME,
        "https://evil.example/sns.us-east-1.amazonaws.com/" + CERT_NAME,
        "https://sns.us-east-1.amazonaws.com@evil.example/" + CERT_NAME,
        "https://user@sns.us-east-1.amazonaws.com/" + CERT_NAME,
        "https://sns.us-east-1.amazonaws.com:8443/" + CERT_NAME,
        "https://sns.amazonaws.com/" + CERT_NAME,
        "https://s3.us-east-1.amazonaws.com/" + CERT_NAME,
        "https://sns.us-east-1.amazonaws.com/" + CERT_NAME.replace(".pem", ".txt"),
        "https://sns.us_east_1.amazonaws.com/" + CERT_NAME,
        "//sns.us-east-1.amazonaws.com/" + CERT_NAME,
        "",
    ],
)
def test_wrong_certificate_url_host_is_rejected_without_fetching(setup, pki, url):
    make, root, fetched, _ = setup
    client = make(sns_cert_dir=None, fetch=lambda u: pem(pki["cert"]))
    r = post(client, sns_message(pki["key"], version="2", cert_url=url))
    assert (r.status_code, r.get_json()) == (403, {"error": "bad_cert_url"})
    assert fetched == [] and archived(root) == []


def test_accepted_certificate_hosts():
    for url in (
        "https://sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/x.pem",
        "https://SNS.us-east-1.amazonaws.com:443/x.pem",
    ):
        assert check_sns_url(url, pem=True) == url
    with pytest.raises(Rejection):
        check_sns_url("https://sns.us-east-1.amazonaws.com/?Action=x", pem=True)


def test_certificate_is_fetched_once_and_cached(setup, pki):
    make, root, fetched, _ = setup
    client = make(sns_cert_dir=None, fetch=lambda u: pem(pki["cert"]))
    for i in range(3):
        msg = sns_message(pki["key"], version="1", message_id=f"id-{i}")
        assert post(client, msg).status_code == 200
    assert fetched == [CERT_URL]
    assert len(archived(root)) == 3


def test_unknown_topic_is_rejected(setup, pki):
    make, root, _, _ = setup
    client = make()
    msg = sns_message(pki["key"], topic="arn:aws:sns:us-east-1:999999999999:someone-elses")
    r = post(client, msg)
    assert (r.status_code, r.get_json()) == (403, {"error": "unknown_topic"})
    assert archived(root) == []


def test_ca_check_and_certificate_validity(setup, pki, tmp_path):
    make, root, _, certs = setup
    client = make(sns_ca_certs=[pki["ca"]])
    assert post(client, sns_message(pki["key"], version="2")).status_code == 200
    # a certificate from another CA under the same file name is refused when CAs are configured
    rogue_url = CERT_URL.replace("0123456789abcdef", "rogue")
    (certs / CERT_NAME.replace("0123456789abcdef", "rogue")).write_bytes(pem(pki["rogue_cert"]))
    r = post(client, sns_message(pki["rogue_key"], version="2", cert_url=rogue_url))
    assert (r.status_code, r.get_json()) == (403, {"error": "bad_signature"})
    # an expired signing certificate is refused
    _, expired = make_signing_cert(pki["ca_key"], pki["ca"], days_valid=(-60, -1))
    exp_name = CERT_NAME.replace("0123456789abcdef", "expired")
    (certs / exp_name).write_bytes(pem(expired))
    r = post(client, sns_message(pki["key"], cert_url=CERT_URL.replace(CERT_NAME, exp_name)))
    assert r.status_code == 403
    # a certificate not in the directory
    r = post(client, sns_message(pki["key"], cert_url=CERT_URL.replace(CERT_NAME, "missing.pem")))
    assert (r.status_code, r.get_json()) == (403, {"error": "bad_cert_url"})
    assert len(archived(root)) == 1


def test_subscription_confirmation_is_logged_not_archived(setup, pki, caplog):
    make, root, fetched, _ = setup
    client = make()
    msg = sns_message(pki["key"], type_="SubscriptionConfirmation")
    with caplog.at_level("WARNING", logger="mailpulse.collector"):
        r = post(client, msg)
    assert r.status_code == 200 and r.get_json() == {"status": "confirmation_logged"}
    assert msg["SubscribeURL"] in caplog.text
    assert fetched == [] and archived(root) == []
    # a tampered SubscribeURL breaks the signature
    bad = dict(msg, SubscribeURL="https://evil.example/?Action=ConfirmSubscription")
    assert post(client, bad).status_code == 403


def test_subscription_confirmed_with_the_flag(setup, pki):
    make, root, fetched, _ = setup
    client = make(confirm_subscriptions=True, fetch=lambda u: b"<ConfirmSubscriptionResponse/>")
    msg = sns_message(pki["key"], version="2", type_="SubscriptionConfirmation")
    r = post(client, msg)
    assert r.get_json() == {"status": "subscription_confirmed"}
    assert fetched == [msg["SubscribeURL"]] and archived(root) == []
    c = client.get("/healthz").get_json()["counters"]
    assert c["sns_subscription_confirmations"] == {"received": 1, "confirmed": 1}


def test_message_type_header_must_match_and_body_must_be_json(setup, pki):
    make, root, _, _ = setup
    client = make()
    msg = sns_message(pki["key"])
    r = client.post(
        "/webhooks/ses",
        data=body_of(msg),
        headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert r.status_code == 400
    r = client.post("/webhooks/ses", data=b"Type=Notification")
    assert (r.status_code, r.get_json()) == (400, {"error": "not_json"})
    assert archived(root) == []
