"""Customers Mail Cloud at POST /webhooks/cmc: the api_key parameter, both body forms.

CMC posts ``api_key``, ``server_composition``, ``event_type`` and ``event`` as a form
(``event`` a JSON string) or, with "use JSON", as one JSON object. The bodies below are
the published samples (provider-samples/cmc) with the api_key added as CMC adds it.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from collector_support import archived

from pipelines.collector import CollectorConfig, create_app
from pipelines.normalizers import normalize_records
from pipelines.records import iter_records

KEY = "cmc-key-7f3a9c"
#: The published CMC sample bodies (provider-samples/cmc), kept here so the tests run anywhere.
SAMPLES = {
    "bounces_host_unknown": {
        "event_type": "bounces",
        "server_composition": "pro",
        "event": {
            "bounces": [
                {
                    "reason": "host unknown",
                    "returnPath": "info@return.pro.smtps.jp",
                    "created": "2023-01-25 14:05:15",
                    "subject": "メールマガジンのテスト",
                    "apiData": "",
                    "messageId": "<8f902ee7-ae65-8711-48a8-2f708cb14205@example.com>",
                    "from": "info@example.com",
                    "to": "user@example",
                    "status": "1",
                }
            ]
        },
    },
    "bounces_user_unknown": {
        "event_type": "bounces",
        "server_composition": "pro",
        "event": {
            "bounces": [
                {
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist. Please try 5.1.1 double-checking the recipient's email address for typos or 5.1.1 unnecessary spaces. Learn more at 5.1.1  <https://support.google.com/mail/?p=NoSuchUser> b197-20020a621bce000000b0058b80756b07si311029pfb.3 - gsmtp (in reply to RCPT TO)",
                    "returnPath": "info@return.pro.smtps.jp",
                    "created": "2023-01-25 14:06:07",
                    "subject": "メールマガジンのテスト",
                    "apiData": "",
                    "messageId": "<9e7e564c-ac83-8cd8-2cb4-b9ff2a9f168d@example.com>",
                    "from": "info@example.com",
                    "to": "no-user@example.jp",
                    "status": "2",
                }
            ]
        },
    },
    "deliveries_failed": {
        "event_type": "deliveries",
        "server_composition": "pro",
        "event": {
            "deliveries": [
                {
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist. Please try 5.1.1 double-checking the recipient's email address for typos or 5.1.1 unnecessary spaces. Learn more at 5.1.1  <https://support.google.com/mail/?p=NoSuchUser> b197-20020a621bce000000b0058b80756b07si311029pfb.3 - gsmtp (in reply to RCPT TO)",
                    "sourceIp": "",
                    "returnPath": "info@return.pro.smtps.jp",
                    "created": "2023-01-25 14:06:06",
                    "subject": "メールマガジンのテスト",
                    "apiData": "",
                    "messageId": "<9e7e564c-ac83-8cd8-2cb4-b9ff2a9f168d@example.com>",
                    "from": "info@example.com",
                    "to": "no-user@example.jp",
                    "senderIp": "100.100.100.3",
                    "status": "failed",
                }
            ]
        },
    },
    "deliveries_queued": {
        "event_type": "deliveries",
        "server_composition": "pro",
        "event": {
            "deliveries": [
                {
                    "reason": "",
                    "sourceIp": "100.100.100.1",
                    "returnPath": "info@return.pro.smtps.jp",
                    "created": "2023-01-25 14:03:06",
                    "subject": "メールマガジンのテスト",
                    "apiData": "",
                    "messageId": "<031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com>",
                    "from": "info@example.com",
                    "to": "user@example.jp",
                    "senderIp": "",
                    "status": "queued",
                }
            ]
        },
    },
    "deliveries_succeeded": {
        "event_type": "deliveries",
        "server_composition": "pro",
        "event": {
            "deliveries": [
                {
                    "reason": "",
                    "sourceIp": "",
                    "returnPath": "info@return.pro.smtps.jp",
                    "created": "2023-01-25 14:03:09",
                    "subject": "メールマガジンのテスト",
                    "apiData": "",
                    "messageId": "<031a32d4-06cd-b1ae-9526-011c0b9f1296@example.com>",
                    "from": "info@example.com",
                    "to": "user@example.jp",
                    "senderIp": "100.100.100.3",
                    "status": "succeeded",
                }
            ]
        },
    },
}


@pytest.fixture
def client(tmp_path):
    config = CollectorConfig(
        archive=str(tmp_path / "archive"), cmc_api_key=KEY, maintain_interval=0
    )
    return create_app(config).test_client(), tmp_path / "archive"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_json_body_with_api_key(client, ctx, name):
    c, root = client
    doc = SAMPLES[name]
    body = json.dumps({"api_key": KEY, **doc}, ensure_ascii=False, indent=2).encode()
    r = c.post("/webhooks/cmc", data=body, content_type="application/json")
    assert r.status_code == 200, r.get_json()
    [line] = archived(root)
    assert json.loads(line) == doc  # everything but the credential
    assert KEY.encode() not in line
    res = normalize_records(iter_records(line), ctx)
    assert res.dead_letters == [] and len(res.events) == 1


def test_form_body_becomes_the_json_the_normalizer_reads(client, ctx):
    c, root = client
    doc = SAMPLES["deliveries_succeeded"]
    form = urlencode(
        {
            "api_key": KEY,
            "server_composition": doc["server_composition"],
            "event_type": doc["event_type"],
            "event": json.dumps(doc["event"]),
        }
    )
    r = c.post("/webhooks/cmc", data=form, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    [line] = archived(root)
    assert json.loads(line) == doc and KEY.encode() not in line
    [ev] = normalize_records(iter_records(line), ctx).events
    assert ev["event_type"] == "delivered"


def test_unchanged_body_when_the_key_is_in_the_url(client):
    c, root = client
    body = json.dumps(SAMPLES["bounces_host_unknown"], ensure_ascii=False, indent=2).encode()
    assert (
        c.post(
            f"/webhooks/cmc?api_key={KEY}", data=body, content_type="application/json"
        ).status_code
        == 200
    )
    [line] = archived(root)
    assert json.loads(line) == json.loads(body)
    assert b'"reason": "host unknown"' in line  # only line-break whitespace was removed


@pytest.mark.parametrize("how", ["missing", "wrong", "wrong-in-url", "prefix", "wrong-type"])
def test_wrong_or_missing_api_key_is_rejected(client, how):
    c, root = client
    doc = dict(SAMPLES["deliveries_queued"])
    url = "/webhooks/cmc"
    if how == "wrong":
        doc["api_key"] = KEY + "x"
    elif how == "prefix":
        doc["api_key"] = KEY[:-1]
    elif how == "wrong-type":
        doc["api_key"] = [KEY]
    elif how == "wrong-in-url":
        url += "?api_key=nope"
        doc["api_key"] = KEY  # the URL's key is the one checked
    r = c.post(url, data=json.dumps(doc), content_type="application/json")
    assert (r.status_code, r.get_json()) == (401, {"error": "unauthenticated"})
    assert archived(root) == []


@pytest.mark.parametrize(
    "body,ctype",
    [
        (b'{"api_key": "' + KEY.encode() + b'", "event_type": ', "application/json"),
        (b"[1, 2]", "application/json"),
        (
            urlencode({"api_key": KEY, "event_type": "bounces", "event": "{not json"}).encode(),
            "application/x-www-form-urlencoded",
        ),
    ],
)
def test_not_json_is_rejected(client, body, ctype):
    c, root = client
    r = c.post("/webhooks/cmc", data=body, content_type=ctype)
    assert (r.status_code, r.get_json()) == (400, {"error": "not_json"})
    assert archived(root) == []
