"""What the fast-path property tests share: real inputs (``mailpulse synth`` output and
the provider payloads in tests/payloads/), a generic mutator, and the record-for-record
comparison of the vectorized path (+ the exact path for what it leaves) against the
exact path alone."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from conftest import ROOT, TEST_HASH_KEY
from hypothesis import strategies as st

from pipelines.events import events_to_arrow
from pipelines.hashing import EmailHasher
from pipelines.normalizers import NormalizeSettings, normalize_record, vectorized
from pipelines.records import iter_records

PAYLOADS = ROOT / "tests" / "payloads"
INGESTED = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)


def context(**kw) -> NormalizeSettings:
    return NormalizeSettings(
        hasher=EmailHasher(TEST_HASH_KEY), source_uri="s://chunk", ingested_at=INGESTED, **kw
    )


@lru_cache(maxsize=None)
def synth_lines(provider: str, messages: int = 400) -> tuple[bytes, ...]:
    """Every record line ``mailpulse synth`` writes for ``provider`` (SNS-wrapped SES
    records included), from a real run of the command."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="vec-synth-"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "synth",
            "--out",
            str(out),
            "--date",
            "2026-11-20",
            "--messages",
            str(messages),
            "--seed",
            "11",
            "--providers",
            provider,
            "--sns-rate",
            "0.2",
        ],
        check=True,
        capture_output=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    lines: list[bytes] = []
    for f in sorted(out.rglob("*.json.gz")):
        lines.extend(ln for ln in gzip.decompress(f.read_bytes()).split(b"\n") if ln.strip())
    return tuple(lines)


def payload_docs(provider: str) -> list[Any]:
    """The real provider payloads (one JSON document per file)."""
    dirs = [PAYLOADS / provider]
    if provider == "cmc":
        dirs.append(PAYLOADS / "provider-samples" / "cmc")
    docs = []
    for d in dirs:
        for f in sorted(d.glob("*.json")):
            docs.append(orjson.loads(f.read_bytes()))
    return docs


#: Values a mutation may put anywhere: each is something a provider or a relay has sent,
#: or a near miss of the clean shape.
ODD_VALUES = [
    None,
    "",
    " ",
    "x",
    " padded ",
    "\u3000x",
    "x\x1c",
    0,
    5,
    -1,
    1.5,
    True,
    False,
    [],
    {},
    ["a", "a"],
    ["a", 1],
    [" a"],
    {"emailAddress": "z@y.jp"},
    "2017-08-05T00:41:02.669Z",
    "2017-08-05T00:41:02Z",
    "2017-08-05T00:41:02.669z",
    "2017-02-30T00:00:00.000Z",
    "2017-08-05T24:00:00.000Z",
    "1969-12-31T23:59:59Z",
    "2017-08-05T00:41:02.6Z",
    "2017-08-05T00:41:02.669123Z",
    "2017-08-05 00:41:02",
    "2026-11-20 10:11:12",
    "2026-02-30 00:00:00",
    "2026/11/20 10:11:12",
    "0001-01-01 00:00:00",
    "a@b.c",
    " A@B.C ",
    "Name <n@x.jp>",
    "noat",
    "@",
    "550 5.1.1 <u@x.jp> unknown",
    "see https://x.jp/?e=u%40x.jp",
    "Permanent",
    "Transient",
    "Undetermined",
    "General",
    "Bounce",
    "Delivery",
    "Send",
    "Open",
    "Click",
    "Complaint",
    "DeliveryDelay",
    "Reject",
    "Rendering Failure",
    "Subscription",
    "AmazonSnsSubscriptionSucceeded",
    "Unknownish",
    "queued",
    "succeeded",
    "failed",
    "deferred",
    "Failed",
    " queued",
    "deliveries",
    "bounces",
    "blocks",
    "<m@x>",
    "\\u003Cm@x\\u003E",
    "4",
    "02",
    "99",
]


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _apply(doc, path, op, value):
    if not path:
        return value if op == "set" else doc
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == "set":
        parent[last] = value
    elif op == "delete":
        if isinstance(parent, dict):
            parent.pop(last, None)
        else:
            parent.pop(last)
    elif op == "rename" and isinstance(parent, dict):
        parent[str(last) + "x"] = parent.pop(last)
    elif op == "pad" and isinstance(parent[last], str):
        parent[last] = " " + parent[last]
    elif op == "upper" and isinstance(parent[last], str):
        parent[last] = parent[last].upper()
    return doc


@st.composite
def mutated(draw, base_docs):
    """A real document with zero to three of its values replaced, removed, renamed,
    padded or upper-cased (anywhere in the document, nested ones included)."""
    doc = orjson.loads(orjson.dumps(draw(st.sampled_from(base_docs))))
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["set", "set", "set", "delete", "rename", "pad", "upper"]))
        value = orjson.loads(orjson.dumps(draw(st.sampled_from(ODD_VALUES))))  # a copy
        doc = _apply(doc, path, op, value)
    return doc


#: Text-level changes to a serialized record: what a relay, a hand edit or a broken
#: writer does, and what one JSON reader accepts and another refuses.
RAW_MUTATIONS = [
    lambda b: b.replace(b'":"', b'": "', 1),  # spacing
    lambda b: b.replace(b"{", b'{"eventType":"Bounce",', 1),  # a repeated key
    lambda b: b.replace(b"{", b'{"timestamp":"x",', 1),
    lambda b: b[:-1] + b',"n":NaN}' if b.endswith(b"}") else b,  # NaN (orjson refuses)
    lambda b: b[:-1] + b',"n":Infinity}' if b.endswith(b"}") else b,
    lambda b: b[:-1] + b',"n":"NaN and Inf"}' if b.endswith(b"}") else b,
    lambda b: b[:-1] + b",}" if b.endswith(b"}") else b,  # trailing comma
    lambda b: b + b" ",  # padding
    lambda b: b + b"\r",
    lambda b: b + b"{}",  # two values on a line
    lambda b: b[:-1] + b',"s":"\\ud800"}' if b.endswith(b"}") else b,  # lone surrogate
    lambda b: b[:-1] + b',"s":"\xff"}' if b.endswith(b"}") else b,  # not UTF-8
    lambda b: b[:-1] + b',"big":1e999}' if b.endswith(b"}") else b,
    lambda b: b.replace(b'"mail"', b'"\\u006dail"', 1),  # an escaped key
    lambda b: b"",  # a blank line
]


@st.composite
def raw_mutated(draw, line_strategy):
    """A serialized record, sometimes changed as text (see RAW_MUTATIONS)."""
    line = draw(line_strategy)
    if draw(st.integers(0, 5)) == 0:
        line = draw(st.sampled_from(RAW_MUTATIONS))(line)
    return line


def sns_wrapped(doc) -> dict:
    return {
        "Type": "Notification",
        "MessageId": "m-1",
        "Timestamp": "2026-11-20T00:00:00.000Z",
        "TopicArn": "arn:aws:sns:x",
        "Message": orjson.dumps(doc).decode(),
    }


def chunk_of(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def _exact(chunk: bytes, ctx):
    events, dead, counts = [], [], {}
    for rec in iter_records(chunk):
        res = normalize_record(rec, ctx)
        for e in res.events:
            events.append((rec.line, e))
        dead.extend((rec.line, d.as_dict()) for d in res.dead_letters)
        prov = (
            res.events[0]["provider"]
            if res.events
            else next((d.provider for d in res.dead_letters if d.provider), None)
        )
        c = counts.setdefault(prov, [0, 0, 0, 0])
        for i, v in enumerate(
            (res.records, len(res.events), len(res.dead_letters), res.without_event)
        ):
            c[i] += v
    return events, dead, counts


def _fast(chunk: bytes, ctx, modules):
    fast = vectorized.normalize_chunk(chunk, ctx, min_records=0, modules=modules, with_lines=True)
    rows = fast.events.to_pylist()
    events = [(r.pop("_line"), r) for r in rows]
    dead, counts = [], {}
    for prov, n in fast.counts.items():
        counts.setdefault(prov, [0, 0, 0, 0])
        counts[prov][0] += n
        counts[prov][1] += n
    for rec in fast.residual:
        res = normalize_record(rec, ctx)
        events.extend((rec.line, e) for e in res.events)
        dead.extend((rec.line, d.as_dict()) for d in res.dead_letters)
        prov = (
            res.events[0]["provider"]
            if res.events
            else next((d.provider for d in res.dead_letters if d.provider), None)
        )
        c = counts.setdefault(prov, [0, 0, 0, 0])
        for i, v in enumerate(
            (res.records, len(res.events), len(res.dead_letters), res.without_event)
        ):
            c[i] += v
    return events, dead, counts, fast


def assert_same(chunk: bytes, ctx, modules=None):
    """The fast path (+ the exact path for the records it leaves) gives the exact path's
    events and dead letters record for record, and the same counts. Returns the fast
    result (for tests that check how much took the fast path)."""
    ev_x, dl_x, cnt_x = _exact(chunk, ctx)
    ev_f, dl_f, cnt_f, fast = _fast(chunk, ctx, modules)
    # the canonical (Arrow) form of each event, grouped by record line, in order
    norm = lambda evs: sorted(  # noqa: E731
        (
            (line, row)
            for (line, _), row in zip(evs, events_to_arrow([e for _, e in evs]).to_pylist())
        ),
        key=lambda x: x[0],
    )
    fast_rows = sorted(ev_f, key=lambda x: x[0])
    fast_rows = [
        (ln, r)
        for (ln, _), r in zip(fast_rows, events_to_arrow([e for _, e in fast_rows]).to_pylist())
    ]
    assert fast_rows == norm(ev_x)
    assert sorted(dl_f, key=lambda x: x[0]) == sorted(dl_x, key=lambda x: x[0])
    assert cnt_f == cnt_x
    return fast
