"""Provider detection per record, the dispatcher's guarantees, and the record reader
(pipelines/records.py): NDJSON, pretty-printed and concatenated documents, gzip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import SAMPLES

from pipelines.normalizers import (
    detect_provider,
    normalize_bytes,
    normalize_document,
    normalize_record,
)
from pipelines.records import RawRecord, decompress, decompress_checked, iter_records

SG = Path(__file__).resolve().parent / "payloads" / "sendgrid"

# SES shapes, abbreviated from the AWS SES developer guide's examples (detection only;
# the SES normalizer has its own tests).
SES_EVENT = {
    "eventType": "Delivery",
    "mail": {"messageId": "m", "destination": ["a@example.com"]},
    "delivery": {"recipients": ["a@example.com"]},
}
SES_NOTIFICATION = {
    "notificationType": "Bounce",
    "mail": {"messageId": "m"},
    "bounce": {"bounceType": "Permanent", "bouncedRecipients": []},
}
SNS_ENVELOPE = {
    "Type": "Notification",
    "MessageId": "x",
    "TopicArn": "arn:aws:sns:t",
    "Message": json.dumps(SES_NOTIFICATION),
}
SQS_MESSAGE = {"MessageId": "y", "Body": json.dumps(SNS_ENVELOPE)}
SQS_DUMP = {"Messages": [SQS_MESSAGE]}


def _sg(name):
    return json.loads((SG / name).read_bytes())


@pytest.mark.parametrize(
    "doc, provider",
    [
        (_sg("delivered.json"), "sendgrid"),  # a POST body: an array
        (_sg("delivered.json")[0], "sendgrid"),  # a bare event object
        (_sg("ab_test_processed.json"), "sendgrid"),  # a bare object as published
        (_sg("account_status_change.json")[0], "sendgrid"),  # no email, still SendGrid
        ([], "sendgrid"),  # an empty POST body
        (json.loads((SAMPLES / "cmc" / "deliveries_queued.json").read_bytes()), "cmc"),
        (json.loads((SAMPLES / "cmc" / "bounces_user_unknown.json").read_bytes()), "cmc"),
        ({"event_type": "blocks", "event": {"blocks": []}}, "cmc"),
        (SES_EVENT, "ses"),
        (SES_NOTIFICATION, "ses"),
        (SNS_ENVELOPE, "ses"),
        (SQS_MESSAGE, "ses"),
        (SQS_DUMP, "ses"),
    ],
)
def test_detects_each_shape(doc, provider):
    assert detect_provider(doc) == provider


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"event": "open"},
        {"email": "a@example.com", "timestamp": 1},
        {"event_type": "x"},
        {"event_type": "deliveries", "event": "not an object"},
        "text",
        42,
        None,
        True,
        1.5,
    ],
)
def test_unknown_shapes_are_not_detected(doc):
    assert detect_provider(doc) is None


def test_unknown_shape_is_a_dead_letter_naming_the_keys(ctx):
    res = normalize_document({"foo": 1, "bar": [2]}, ctx)
    assert res.records == 1 and res.events == []
    (dl,) = res.dead_letters
    assert (
        dl.reason == "unknown record shape (not SendGrid, SES or CMC): object with keys [bar, foo]"
    )
    assert dl.provider is None and json.loads(dl.raw) == {"foo": 1, "bar": [2]}


@pytest.mark.parametrize(
    "provider, doc, reason",
    [
        ("cmc", _sg("delivered.json"), "not a cmc record: array of 1"),
        (
            "ses",
            _sg("delivered.json")[0],
            "not a ses record: object with keys "
            "[category, email, event, response, sg_event_id, "
            "sg_message_id, smtp-id, timestamp]",
        ),
        (
            "sendgrid",
            SES_EVENT,
            "not a sendgrid record: object with keys [delivery, eventType, mail]",
        ),
        ("sendgrid", "just text", "not a sendgrid record: str"),
    ],
)
def test_forced_wrong_provider_is_a_dead_letter(ctx, provider, doc, reason):
    res = normalize_document(doc, ctx, provider)
    assert [(d.reason, d.provider) for d in res.dead_letters] == [(reason, provider)]
    assert res.events == [] and res.records == 1


def test_a_mixed_file_is_read_per_record(ctx):
    lines = [
        json.dumps(_sg("delivered.json")),
        (SAMPLES / "cmc" / "deliveries_queued.json").read_text().replace("\n", " "),
        json.dumps({"unknown": True}),
        "not json at all",
    ]
    res = normalize_bytes("\n".join(lines).encode(), ctx)
    assert [e["provider"] for e in res.events] == ["sendgrid", "cmc"]
    assert [(d.line, d.reason.split(":")[0]) for d in res.dead_letters] == [
        (3, "unknown record shape (not SendGrid, SES or CMC)"),
        (4, "not JSON"),
    ]
    assert res.records == 4


def test_a_normalizer_bug_becomes_a_dead_letter_not_a_crash(ctx, monkeypatch):
    # A fault a real record cannot be made to produce on demand: simulate a bug.
    from pipelines.normalizers import sendgrid

    def boom(doc, ctx):
        raise KeyError("surprise")

    monkeypatch.setattr(sendgrid, "normalize", boom)
    raw = json.dumps(_sg("delivered.json")).encode()
    res = normalize_record(RawRecord(3, raw, json.loads(raw), None), ctx)
    (dl,) = res.dead_letters
    assert dl.reason == "sendgrid normalizer error: KeyError: 'surprise'"
    assert (dl.line, dl.source_uri, dl.raw) == (3, "test://payload", raw.decode())


def test_unparsable_record_keeps_its_line_and_source(ctx):
    res = normalize_record(RawRecord(12, b"{oops", None, "not JSON: x"), ctx)
    (dl,) = res.dead_letters
    assert (dl.line, dl.source_uri, dl.reason, dl.raw, dl.provider) == (
        12,
        "test://payload",
        "not JSON: x",
        "{oops",
        None,
    )
    forced = normalize_record(RawRecord(12, b"{oops", None, "not JSON: x"), ctx, "cmc")
    assert forced.dead_letters[0].provider == "cmc"


# --- the record reader ---------------------------------------------------------------


def _recs(data: bytes):
    return [(r.line, r.doc, r.error) for r in iter_records(data)]


def test_ndjson_one_record_per_line_blank_lines_and_crlf():
    data = b'{"a":1}\r\n\n{"b":2}\n   \n[3]\n'
    assert _recs(data) == [(1, {"a": 1}, None), (3, {"b": 2}, None), (5, [3], None)]


def test_pretty_printed_single_document():
    doc = _sg("click.json")
    assert _recs(json.dumps(doc, indent=2).encode()) == [(1, doc, None)]


def test_concatenated_pretty_printed_documents_keep_their_start_lines():
    a, b = _sg("open.json"), _sg("bounce.json")
    ta, tb = json.dumps(a, indent=2), json.dumps(b, indent=4)
    data = (ta + "\n\n" + tb + "\n").encode()
    assert _recs(data) == [(1, a, None), (ta.count("\n") + 3, b, None)]


def test_documents_on_one_line_without_separator():
    assert _recs(b'{"a":1}{"b":2} [3]') == [
        (1, {"a": 1}, None),
        (1, {"b": 2}, None),
        (1, [3], None),
    ]


def test_a_broken_pretty_document_does_not_take_its_neighbours_down():
    good1, good2 = json.dumps({"x": 1}, indent=2), json.dumps({"y": 2}, indent=2)
    broken = '{\n  "z": ,\n  "w": 1\n}'
    data = "\n".join([good1, broken, good2]).encode()
    recs = list(iter_records(data))
    assert [(r.line, r.doc) for r in recs] == [(1, {"x": 1}), (4, None), (8, {"y": 2})]
    # the position is within the record (its first line is line 4 of the file)
    assert recs[1].error == "not JSON: Expecting value (line 2 column 8 of the record)"
    assert recs[1].raw == broken.encode()


def test_bad_first_line_of_ndjson_still_reads_the_rest():
    data = b'garbage\n{"a":1}\nmore garbage\n{"b":2}\n'
    got = _recs(data)
    assert [(ln, doc) for ln, doc, _ in got] == [(1, None), (2, {"a": 1}), (3, None), (4, {"b": 2})]
    assert all(err.startswith("not JSON") for _, doc, err in got if doc is None)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"a": NaN}', "not JSON: NaN is not valid JSON"),
        (b'{"a": Infinity}', "not JSON: Infinity is not valid JSON"),
        (b'\xff\xfe{"a":1}', "not UTF-8 text"),
    ],
)
def test_not_json(raw, reason):
    assert _recs(raw) == [(1, None, reason)]


def test_integers_beyond_64_bits_and_lone_surrogates_are_read():
    (rec,) = iter_records(b'{"big": 123456789012345678901234567890, "s": "a\\ud800b"}')
    assert rec.error is None
    assert rec.doc == {"big": 123456789012345678901234567890, "s": "a\ufffdb"}
    json.dumps(rec.doc).encode("utf-8")  # encodable now


def test_empty_and_blank_files_have_no_records():
    assert _recs(b"") == [] and _recs(b"\n  \n") == []


def test_gzip_by_magic_number_not_by_name():
    data = b'{"a":1}\n{"b":2}\n'
    assert decompress(gzip.compress(data)) == data
    assert decompress(data) == data
    assert decompress_checked(gzip.compress(data) + gzip.compress(data)) == (data + data, None)


def test_truncated_gzip_keeps_what_decompresses_and_says_so():
    data = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 50)) for i in range(3000))
    gz = gzip.compress(data)
    out, problem = decompress_checked(gz[: len(gz) // 2])
    assert 0 < len(out) < len(data) and data.startswith(out)
    assert problem.startswith("gzip stream truncated after ") and "re-fetch" in problem


def test_corrupt_gzip_is_reported():
    out, problem = decompress_checked(b"\x1f\x8b" + b"\x00" * 40)
    assert out == b"" and problem.startswith("corrupt gzip data")
    out, problem = decompress_checked(gzip.compress(b"[1]\n") + b"trailing junk")
    assert out == b"[1]\n" and problem.startswith("gzip data after the first member")
