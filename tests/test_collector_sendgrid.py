"""SendGrid's Signed Event Webhook at POST /webhooks/sendgrid.

The vectors below are the ones SendGrid's own libraries test with (public key, payload,
timestamp and signature published in sendgrid-python test/unit/test_eventwebhook.py,
sendgrid-nodejs packages/eventwebhook/src/eventwebhook.spec.js and sendgrid-go
helpers/eventwebhook/eventwebhook_test.go): the valid ones must be accepted and
archived byte-exact, every invalid one rejected with a 4xx and never archived.
"""

from __future__ import annotations

import base64
import json

import pytest
from collector_support import archived
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipelines.collector import CollectorConfig, create_app
from pipelines.collector.verification import (
    DEFAULT_SIGNATURE_MAX_AGE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    parse_public_keys,
)

# --- sendgrid-python test/unit/test_eventwebhook.py ---------------------------------------
PY_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3G"
    "Rqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
PY_SIG = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
PY_TS = "1600112502"
PY_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()
PY_BAD_SIG = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0="
OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWH"
    "w8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
)

# --- sendgrid-nodejs eventwebhook.spec.js and sendgrid-go eventwebhook_test.go (same key) ---
JS_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBce"
    "pxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
)
JS_SIG = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
JS_TS = "1588788367"
JS_PAYLOAD = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
JS_BAD_SIG = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0="

VALID = [
    pytest.param(PY_KEY, PY_PAYLOAD, PY_SIG, PY_TS, id="sendgrid-python"),
    pytest.param(JS_KEY, JS_PAYLOAD, JS_SIG, JS_TS, id="sendgrid-nodejs+go"),
]

# (configured key, body, signature header, timestamp header, expected status, reason)
INVALID = [
    pytest.param(OTHER_KEY, PY_PAYLOAD, PY_SIG, PY_TS, 403, "bad_signature", id="python-bad-key"),
    pytest.param(PY_KEY, b"payload", PY_SIG, PY_TS, 403, "bad_signature", id="python-bad-payload"),
    pytest.param(
        PY_KEY, PY_PAYLOAD, PY_BAD_SIG, PY_TS, 403, "bad_signature", id="python-bad-signature"
    ),
    pytest.param(
        PY_KEY,
        PY_PAYLOAD,
        PY_SIG,
        "timestamp",
        400,
        "malformed_signature",
        id="python-bad-timestamp",
    ),
    pytest.param(
        OTHER_KEY, JS_PAYLOAD, JS_SIG, JS_TS, 403, "bad_signature", id="nodejs-invalid-key"
    ),
    pytest.param(JS_KEY, b"payload", JS_SIG, JS_TS, 403, "bad_signature", id="nodejs-bad-payload"),
    pytest.param(
        JS_KEY, JS_PAYLOAD, JS_BAD_SIG, JS_TS, 403, "bad_signature", id="nodejs-bad-signature"
    ),
    pytest.param(
        JS_KEY,
        JS_PAYLOAD,
        JS_SIG,
        "timestamp",
        400,
        "malformed_signature",
        id="nodejs-bad-timestamp",
    ),
    pytest.param(
        JS_KEY,
        b"this is not valid payload for the given signature",
        JS_SIG,
        JS_TS,
        403,
        "bad_signature",
        id="go-not-valid-payload",
    ),
    pytest.param(
        JS_KEY,
        JS_PAYLOAD,
        JS_SIG + "causing failure",
        JS_TS,
        400,
        "malformed_signature",
        id="go-not-valid-signature",
    ),
    pytest.param(
        JS_KEY,
        JS_PAYLOAD,
        JS_SIG,
        "invalid timestamp",
        400,
        "malformed_signature",
        id="go-not-valid-timestamp",
    ),
    pytest.param(JS_KEY, JS_PAYLOAD, JS_SIG, "", 401, "unsigned", id="go-empty-timestamp"),
    # beyond the libraries' own cases
    pytest.param(
        JS_KEY, JS_PAYLOAD + b" ", JS_SIG, JS_TS, 403, "bad_signature", id="one-byte-appended"
    ),
    pytest.param(
        JS_KEY,
        JS_PAYLOAD.replace(b"test_event", b"test_evenT"),
        JS_SIG,
        JS_TS,
        403,
        "bad_signature",
        id="one-byte-changed",
    ),
    pytest.param(
        JS_KEY, JS_PAYLOAD, JS_SIG, str(int(JS_TS) + 1), 403, "bad_signature", id="other-timestamp"
    ),
    pytest.param(
        JS_KEY,
        JS_PAYLOAD,
        JS_SIG.rstrip("="),
        JS_TS,
        400,
        "malformed_signature",
        id="signature-without-padding",
    ),
    pytest.param(
        JS_KEY,
        JS_PAYLOAD,
        JS_SIG.replace("+", "-").replace("/", "_"),
        JS_TS,
        400,
        "malformed_signature",
        id="url-safe-alphabet",
    ),
    pytest.param(JS_KEY, JS_PAYLOAD, "", JS_TS, 401, "unsigned", id="no-signature"),
]


def make_client(tmp_path, keys, *, clock, max_age=DEFAULT_SIGNATURE_MAX_AGE, **cfg):
    config = CollectorConfig(
        archive=str(tmp_path / "archive"),
        sendgrid_keys=parse_public_keys(keys),
        signature_max_age=max_age,
        maintain_interval=0,
        **cfg,
    )
    app = create_app(config, clock=clock)
    return app.test_client(), tmp_path / "archive"


def post(client, body, sig, ts, **headers):
    h = {}
    if sig:
        h[SIGNATURE_HEADER] = sig
    if ts:
        h[TIMESTAMP_HEADER] = ts
    h.update(headers)
    return client.post("/webhooks/sendgrid", data=body, headers=h, content_type="application/json")


def counters(client):
    return client.get("/healthz").get_json()["counters"]


@pytest.mark.parametrize("key,payload,sig,ts", VALID)
def test_published_valid_vectors_are_archived_byte_exact(tmp_path, key, payload, sig, ts):
    client, root = make_client(tmp_path, [key], clock=lambda: int(ts) + 10)
    r = post(client, payload, sig, ts)
    assert r.status_code == 200, r.get_json()
    # The python vector ends in CRLF (outside the JSON); the line is everything before it.
    assert archived(root) == [payload.rstrip(b"\r\n")]
    c = counters(client)
    assert c["accepted_by_provider"]["sendgrid"] == 1 and c["rejected"] == 0
    assert c["bytes"] == len(payload.rstrip(b"\r\n")) + 1


@pytest.mark.parametrize("key,payload,sig,ts,status,reason", INVALID)
def test_published_invalid_vectors_are_rejected_and_not_archived(
    tmp_path, key, payload, sig, ts, status, reason
):
    client, root = make_client(tmp_path, [key], clock=lambda: 1600112502 + 10, max_age=0)
    r = post(client, payload, sig, ts)
    assert r.status_code == status
    assert r.get_json() == {"error": reason}
    assert archived(root) == []
    c = counters(client)
    assert c["accepted"] == 0 and c["rejected_by_reason"] == {reason: 1}


def test_replayed_vector_is_too_old_unless_the_age_check_is_off(tmp_path):
    now = int(JS_TS) + DEFAULT_SIGNATURE_MAX_AGE + 1
    client, root = make_client(tmp_path, [JS_KEY], clock=lambda: now)
    r = post(client, JS_PAYLOAD, JS_SIG, JS_TS)
    assert (r.status_code, r.get_json()) == (403, {"error": "too_old"})
    assert archived(root) == []
    client, root = make_client(tmp_path / "off", [JS_KEY], clock=lambda: now, max_age=0)
    assert post(client, JS_PAYLOAD, JS_SIG, JS_TS).status_code == 200
    assert archived(root) == [JS_PAYLOAD]


# --- our own keys --------------------------------------------------------------------------


def new_key():
    priv = ec.generate_private_key(ec.SECP256R1())
    der = priv.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, base64.b64encode(der).decode()


def sign(priv, body: bytes, ts: str) -> str:
    return base64.b64encode(priv.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def batch(n=3, start=0):
    return json.dumps(
        [
            {
                "email": f"u{i}@example.com",
                "event": "delivered",
                "timestamp": 1763900000,
                "sg_event_id": f"ev-{i}",
                "sg_message_id": f"m{i}.filter",
            }
            for i in range(start, start + n)
        ]
    ).encode()


NOW = 1763900000


def test_key_rotation_accepts_any_configured_key(tmp_path):
    (old, old_pub), (new, new_pub), (stranger, _) = new_key(), new_key(), new_key()
    pem = (
        serialization.load_der_public_key(base64.b64decode(new_pub))
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    # the environment form: comma-separated, base64 and PEM mixed
    client, root = make_client(tmp_path, f"{old_pub}, {pem}", clock=lambda: NOW)
    ts = str(NOW - 5)
    b1, b2, b3 = batch(start=0), batch(start=10), batch(start=20)
    assert post(client, b1, sign(old, b1, ts), ts).status_code == 200
    assert post(client, b2, sign(new, b2, ts), ts).status_code == 200
    assert post(client, b3, sign(stranger, b3, ts), ts).status_code == 403
    assert archived(root) == [b1, b2]


@pytest.mark.parametrize(
    "offset,status,reason",
    [
        (-60, 200, None),
        (-600, 403, "too_old"),  # limit 300 s in this test
        (+200, 200, None),  # small clock skew is fine
        (+400, 403, "future_timestamp"),
    ],
)
def test_signature_age(tmp_path, offset, status, reason):
    priv, pub = new_key()
    client, root = make_client(tmp_path, [pub], clock=lambda: NOW, max_age=300)
    body, ts = batch(), str(NOW + offset)
    r = post(client, body, sign(priv, body, ts), ts)
    assert r.status_code == status
    assert archived(root) == ([body] if status == 200 else [])
    if reason:
        assert r.get_json() == {"error": reason}


def test_pretty_printed_body_is_archived_on_one_line_unchanged_otherwise(tmp_path):
    priv, pub = new_key()
    client, root = make_client(tmp_path, [pub], clock=lambda: NOW)
    doc = [
        {
            "email": "a@example.com",
            "event": "bounce",
            "reason": "550 5.1.1  two  spaces",
            "n": 1.50,
            "big": 123456789012345678901234567890,
            "sg_event_id": "x",
        }
    ]
    body = (json.dumps(doc, indent=2) + "\n").encode().replace(b"1.5", b"1.50")
    ts = str(NOW)
    assert post(client, body, sign(priv, body, ts), ts).status_code == 200
    [line] = archived(root)
    assert b"\n" not in line and b"\r" not in line
    assert json.loads(line) == json.loads(body)
    assert b'"550 5.1.1  two  spaces"' in line and b"1.50" in line  # strings, number spelling kept


@pytest.mark.parametrize(
    "body,status",
    [
        (b"not json at all", 400),
        (b'"a string"', 400),
        (b"", 400),
    ],
)
def test_signed_but_not_json_is_rejected(tmp_path, body, status):
    priv, pub = new_key()
    client, root = make_client(tmp_path, [pub], clock=lambda: NOW)
    ts = str(NOW)
    r = post(client, body, sign(priv, body, ts), ts)
    assert (r.status_code, r.get_json()) == (status, {"error": "not_json"})
    assert archived(root) == []


def test_too_large_is_rejected_before_verification(tmp_path):
    priv, pub = new_key()
    client, root = make_client(tmp_path, [pub], clock=lambda: NOW, max_body_bytes=1000)
    body, ts = batch(50), str(NOW)
    assert len(body) > 1000
    r = post(client, body, sign(priv, body, ts), ts)
    assert (r.status_code, r.get_json()) == (413, {"error": "too_large"})
    small = batch(1)
    assert post(client, small, sign(priv, small, ts), ts).status_code == 200
    assert archived(root) == [small]


def test_basic_auth_when_configured(tmp_path):
    priv, pub = new_key()
    client, root = make_client(
        tmp_path, [pub], clock=lambda: NOW, sendgrid_basic_auth=("sendgrid", "s3cret:with-colon")
    )
    body, ts = batch(), str(NOW)
    sig = sign(priv, body, ts)

    def auth(user, pw):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    r = post(client, body, sig, ts)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert post(client, body, sig, ts, **auth("sendgrid", "wrong")).status_code == 401
    assert post(client, body, sig, ts, **auth("other", "s3cret:with-colon")).status_code == 401
    assert post(client, body, sig, ts, **{"Authorization": "Basic !!!"}).status_code == 401
    assert archived(root) == []
    # right credentials but a bad signature: still rejected
    assert (
        post(
            client, body, sign(new_key()[0], body, ts), ts, **auth("sendgrid", "s3cret:with-colon")
        ).status_code
        == 403
    )
    assert post(client, body, sig, ts, **auth("sendgrid", "s3cret:with-colon")).status_code == 200
    assert archived(root) == [body]
    assert counters(client)["rejected_by_reason"] == {"unauthenticated": 4, "bad_signature": 1}


def test_rejection_log_names_the_reason_but_not_the_body(tmp_path, caplog):
    priv, pub = new_key()
    client, _ = make_client(tmp_path, [pub], clock=lambda: NOW)
    body = b'[{"email":"secret.person@example.com","event":"open"}]'
    with caplog.at_level("WARNING", logger="mailpulse.collector"):
        post(client, body, sign(new_key()[0], body, str(NOW)), str(NOW))
    text = caplog.text
    assert "bad_signature" in text and "secret.person" not in text


def test_unconfigured_routes_answer_404(tmp_path):
    priv, pub = new_key()
    client, root = make_client(tmp_path, [pub], clock=lambda: NOW)
    assert client.post("/webhooks/cmc", data=b"{}").status_code == 404
    assert client.post("/webhooks/ses", data=b"{}").status_code == 404
    assert client.get("/webhooks/sendgrid").status_code == 405
    health = client.get("/healthz").get_json()
    assert health["providers"] == {"sendgrid": True, "cmc": False, "ses": False}
    assert health["counters"]["rejected_by_reason"] == {"not_configured": 2}
