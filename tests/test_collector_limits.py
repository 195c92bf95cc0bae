"""Request limits and credentials in the app and its helpers (no server process).

The served behaviour is in test_collector_hostile.py; here: what the app does with a
body that arrives without a length, the order of authentication and parsing, and the
redaction the access logs use.
"""

from __future__ import annotations

import io
import json
import time
from urllib.parse import urlencode

import pytest
from collector_support import archived

from pipelines.collector import CollectorConfig, create_app
from pipelines.collector.verification import REASONS, form_field, redact_target

KEY = "cmc-key-4411"


@pytest.fixture
def client(tmp_path):
    cfg = CollectorConfig(
        archive=str(tmp_path / "archive"), cmc_api_key=KEY, max_body_bytes=1000, maintain_interval=0
    )
    return create_app(cfg).test_client(), tmp_path / "archive"


def post_unsized(c, body: bytes, path: str = "/webhooks/cmc"):
    """A body without Content-Length, as a server hands on a chunked request."""
    return c.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )


def doc_of_size(n: int) -> bytes:
    base = {"api_key": KEY, "event_type": "deliveries", "event": {"deliveries": []}, "pad": ""}
    raw = json.dumps(base).encode()
    base["pad"] = "a" * (n - len(raw))
    out = json.dumps(base).encode()
    assert len(out) == n
    return out


@pytest.mark.parametrize("size,status", [(999, 200), (1000, 200), (1001, 413), (50_000, 413)])
def test_a_body_without_length_is_measured_not_cut(client, size, status):
    c, root = client
    r = post_unsized(c, doc_of_size(size))
    assert r.status_code == status, r.get_json()
    if status == 413:
        assert r.get_json() == {"error": "too_large"}
        assert archived(root) == []
    else:
        [line] = archived(root)
        assert len(json.loads(line)["pad"]) > 900  # whole, not cut at the limit


def test_cmc_form_key_is_checked_before_the_form_is_parsed(client):
    c, root = client
    # an unparseable form: with the wrong key the answer is 401, not 400, so the key
    # was checked first; with the right key the parse then fails with 400
    broken = b"event=%zz%&&=&api_key="
    r = c.post(
        "/webhooks/cmc", data=broken + b"wrong", content_type="application/x-www-form-urlencoded"
    )
    assert (r.status_code, r.get_json()) == (401, {"error": "unauthenticated"})
    r = c.post(
        "/webhooks/cmc",
        data=broken + KEY.encode(),
        content_type="application/x-www-form-urlencoded",
    )
    assert r.status_code == 400
    assert archived(root) == []


def test_cmc_form_with_the_key_anywhere_is_accepted(client):
    c, root = client
    doc = {
        "event_type": "deliveries",
        "server_composition": "pro",
        "event": {"deliveries": [{"status": "queued", "to": "a@example.jp"}]},
    }
    fields = [
        ("event_type", doc["event_type"]),
        ("server_composition", "pro"),
        ("event", json.dumps(doc["event"])),
    ]
    for i in range(len(fields) + 1):
        body = urlencode(fields[:i] + [("api_key", KEY)] + fields[i:])
        r = c.post("/webhooks/cmc", data=body, content_type="application/x-www-form-urlencoded")
        assert r.status_code == 200, (i, r.get_json())
    assert [json.loads(ln) for ln in archived(root)] == [doc] * (len(fields) + 1)


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"api_key=abc", "abc"),
        (b"a=1&api_key=abc&b=2", "abc"),
        (b"api_key=first&api_key=last", "last"),  # parse_qs keeps the last one too
        (b"x_api_key=abc", None),
        (b"a=1&xapi_key=abc", None),
        (b"api_key=a%2Bb+c", "a+b c"),
        (b"api_key=%ff", None),  # not UTF-8
        (b"api_key=\xff", None),
        (b"api_key=" + b"k" * 5000, None),  # no key is that long
        (b"", None),
    ],
)
def test_form_field(body, expected):
    assert form_field(body, b"api_key") == expected


def test_form_field_is_linear_and_fast_on_10_mb():
    bodies = [
        b"a" * 10_000_000,
        b"&" * 10_000_000,
        b"api_key=&" * 1_100_000,
        b"&".join(b"f%d=%d" % (i, i) for i in range(1_100_000)),
    ]
    for body in bodies:
        t = time.perf_counter()
        form_field(body, b"api_key")
        assert time.perf_counter() - t < 0.2


@pytest.mark.parametrize(
    "target,shown",
    [
        ("/webhooks/cmc?api_key=s3cret", "/webhooks/cmc?api_key=[redacted]"),
        (
            "/webhooks/cmc?a=1&token=t&signature=x",
            "/webhooks/cmc?a=[redacted]&token=[redacted]&signature=[redacted]",
        ),
        ("/webhooks/cmc?s3cret", "/webhooks/cmc?[redacted]"),
        (
            "/webhooks/cmc?s3cret%3Dx=1",
            "/webhooks/cmc?[redacted]",
        ),  # an odd name may itself be a secret
        ("http://user:pw@host/webhooks/sendgrid?k=v", "/webhooks/sendgrid?k=[redacted]"),
        ("/healthz", "/healthz"),
        ("/" + "p" * 500, "/" + "p" * 199 + "..."),
    ],
)
def test_redact_target(target, shown):
    assert redact_target(target) == shown
    assert "s3cret" not in redact_target(target) and "pw" not in redact_target(target)


def test_worker_rejection_reasons_are_counted_reasons():
    assert (
        REASONS["timeout"] == 408 and REASONS["overloaded"] == 503 and REASONS["too_large"] == 413
    )


def test_worker_log_lines_are_throttled_per_kind(caplog):
    from pipelines.collector.worker import _Throttle

    now = [100.0]
    throttle = _Throttle(every=1.0, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="mailpulse.collector"):
        for _ in range(50):
            throttle("timeout", 30, "rejected %s", "x")
        throttle("too_large", 30, "rejected %s", "y")
        now[0] += 1.5
        throttle("timeout", 30, "rejected %s", "z")
    assert [r.getMessage() for r in caplog.records] == [
        "rejected x",
        "rejected y",
        "rejected z (and 49 more like it since the last such line)",
    ]
