"""One bad record never stops, stalls or exhausts a day's load (issue 13 items 1-2, and
back-to-back documents from issue 11 item 5).

Each failure seen in the field is a file in an archive and a `mailpulse load` run as a
user runs it (a subprocess): the bad record becomes a dead letter with a precise reason,
a bounded redacted preview and its byte length; the rest of the day loads; the counts
add up. Property tests drive the reader with arbitrary depth, sizes and block cuts.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.normalizers.base import PREVIEW_CHARS
from pipelines.records import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_JSON_DEPTH,
    TOO_DEEP,
    RawPreview,
    iter_records,
    read_blocks,
    read_chunks,
    read_records,
)

DATE = "2026-11-20"
T0 = int(datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc).timestamp())
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def sg(i, event="delivered", **extra):
    ev = {
        "email": f"user{i}@example.com",
        "timestamp": T0 + i,
        "event": event,
        "sg_event_id": f"sg-{event}-{i}",
        "sg_message_id": f"msg{i}.filter0001.1.2",
        "category": ["news"],
    }
    ev.update(extra)
    return ev


def ses_delivery(msg, recipient):
    ts = "2026-11-20T10:00:00.000Z"
    return {
        "eventType": "Delivery",
        "mail": {"timestamp": ts, "messageId": msg, "destination": [recipient]},
        "delivery": {"timestamp": ts, "recipients": [recipient], "smtpResponse": "250 ok"},
    }


def hour_dir(root: Path, provider: str, hour: int = 9) -> Path:
    d = root / provider / "2026" / "11" / "20" / f"{hour:02d}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def good_posts(n_posts: int, per_post: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps([sg(start + p * per_post + i) for i in range(per_post)]).encode()
        for p in range(n_posts)
    ]


def load(archive, wh, *extra, measure=False, timeout=600):
    """`mailpulse load --json` in a subprocess: (CompletedProcess, report, max RSS in MB
    of the load process or None)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "load",
        "--archive",
        str(archive),
        "--date",
        DATE,
        "--warehouse",
        wh,
        "--json",
        *map(str, extra),
    ]
    if measure:
        # a parent that reports the largest resident set of its children (the load and
        # anything the load starts)
        wrapper = (
            "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
            " file=sys.stderr); sys.exit(rc)"
        )
        cmd = [sys.executable, "-c", wrapper, *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    report = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
    rss = None
    if measure:
        rss = int(p.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0]) / 1024
    return p, report, rss


def adds_up(r) -> bool:
    return r["records_read"] == (
        r["events_loaded"]
        + r["duplicates_in_batch"]
        + r["already_loaded"]
        + r["dead_letters"]
        + r["records_without_event"]
    )


def dead_letters(wh_path):
    con = duckdb.connect(str(wh_path), read_only=True)
    try:
        cur = con.execute(
            "SELECT source_uri, line, record_index, reason, raw, raw_bytes "
            "FROM dead_letters ORDER BY source_uri, line, record_index"
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def events_count(wh_path) -> int:
    con = duckdb.connect(str(wh_path), read_only=True)
    try:
        return con.execute(
            "SELECT count(*) FROM events WHERE event_date = DATE '2026-11-20'"
        ).fetchone()[0]
    finally:
        con.close()


# --- at the level a user meets it: a file in the archive, `mailpulse load` ---------------


def test_deeply_nested_lines_become_dead_letters_and_the_day_loads(tmp_path):
    """A 1,000-deep array line used to fail the whole load with RecursionError (every
    rerun too); a 100,000-deep one as well."""
    root = tmp_path / "archive"
    posts = good_posts(4, 25)
    deep_1k = b"[" * 1000 + b"]" * 1000
    deep_100k = b"[" * 100_000 + b"]" * 100_000
    deep_obj = b'{"a":' * 300 + b"1" + b"}" * 300
    lines = [posts[0], deep_1k, posts[1], deep_100k, posts[2], deep_obj, posts[3]]
    (hour_dir(root, "sendgrid") / "deep.json").write_bytes(b"\n".join(lines) + b"\n")
    wh_path = tmp_path / "w.duckdb"
    p, r, _ = load(root, f"duckdb://{wh_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RecursionError" not in p.stderr
    assert (r["records_read"], r["events_loaded"], r["dead_letters"]) == (103, 100, 3)
    assert adds_up(r) and r["adds_up"]
    dls = dead_letters(wh_path)
    assert [(d["line"], d["reason"]) for d in dls] == [(2, TOO_DEEP), (4, TOO_DEEP), (6, TOO_DEEP)]
    assert [d["raw_bytes"] for d in dls] == [2000, 200_000, len(deep_obj)]
    assert all(len(d["raw"]) <= PREVIEW_CHARS + 1 for d in dls)
    # a rerun that reads the file again (--full) adds nothing and fails nothing
    p2, r2, _ = load(root, f"duckdb://{wh_path}", "--full")
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert (r2["events_loaded"], r2["already_loaded"], r2["dead_letters"]) == (0, 100, 3)


def test_a_200_mb_line_loads_the_rest_of_the_day_in_bounded_memory(tmp_path):
    """A 200 MB line of garbage used to take 2.9 GB and end in DuckDB OutOfMemory; so does
    a 200 MB document that never closes. Both stream past, never held whole."""
    root = tmp_path / "archive"
    posts = good_posts(6, 50)
    mb200 = 200 * 1024 * 1024
    path = hour_dir(root, "sendgrid") / "huge.json.gz"
    never_closed = b'[{"email": "leak@example.com", "pad": "'
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(posts[0] + b"\n" + posts[1] + b"\n")
        gz.write(b"x" * mb200 + b"\n")  # garbage
        gz.write(posts[2] + b"\n" + posts[3] + b"\n")
        gz.write(never_closed + b"A" * mb200 + b'"}]\n')
        gz.write(posts[4] + b"\n" + posts[5] + b"\n")
    wh_path = tmp_path / "w.duckdb"
    t0 = time.monotonic()
    p, r, rss = load(root, f"duckdb://{wh_path}", measure=True)
    secs = time.monotonic() - t0
    print(f"200 MB lines: load {secs:.1f} s, peak RSS {rss:.0f} MB")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (r["events_loaded"], r["dead_letters"], r["records_read"]) == (300, 2, 302)
    assert adds_up(r)
    assert rss < 600, f"peak RSS {rss:.0f} MB"
    dls = dead_letters(wh_path)
    assert [d["line"] for d in dls] == [3, 6]
    assert [d["raw_bytes"] for d in dls] == [mb200 + 1, len(never_closed) + mb200 + 4]
    for d in dls:
        assert "over the 10,485,760-byte limit (--max-record-bytes); not parsed" in d["reason"]
        assert len(d["raw"]) <= PREVIEW_CHARS + 1 and d["raw"].endswith("…")
    assert "leak" not in dls[1]["raw"] and "[redacted]@example.com" in dls[1]["raw"]


def test_a_150_kb_url_with_an_encoded_address_loads_fast_and_redacted(tmp_path):
    """One SendGrid click with a 150 KB URL carrying an encoded address made the day's load
    take 112 s instead of 3 s."""
    root = tmp_path / "archive"
    url = (
        "https://t.example/c?u="
        + "A" * 150_000
        + "&to=zqjane%2540example.com&e=zqjoe%40"
        + "example.org&"
        + "b" * 1000
    )
    click = sg(1, "click", url=url)
    lines = [json.dumps([click]).encode()] + good_posts(2, 20, start=10)
    # the same URL in a dead letter (a truncated copy of the post)
    lines.append(json.dumps([click]).encode()[:120_000])
    (hour_dir(root, "sendgrid") / "click.json").write_bytes(b"\n".join(lines) + b"\n")
    wh_path = tmp_path / "w.duckdb"
    t0 = time.monotonic()
    p, r, _ = load(root, f"duckdb://{wh_path}")
    secs = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    assert (r["events_loaded"], r["dead_letters"]) == (41, 1) and adds_up(r)
    assert secs < 60, secs
    con = duckdb.connect(str(wh_path), read_only=True)
    stored = con.execute(
        "SELECT url FROM events WHERE event_date = DATE '2026-11-20' AND event_type = 'click'"
    ).fetchone()[0]
    dump = json.dumps(con.execute("SELECT * FROM dead_letters").fetchall(), default=str)
    con.close()
    assert "[redacted]%2540example.com" in stored and "[redacted]%40example.org" in stored
    assert "zqjane" not in stored and "zqjoe" not in stored
    assert "zqjane" not in dump and "zqjoe" not in dump


def test_max_record_bytes_flag_and_back_to_back_records(tmp_path):
    """--max-record-bytes turns a larger record into a dead letter without parsing it;
    records back to back (Firehose without a delimiter) are read as separate records on
    any line, also when the line is longer than the limit."""
    root = tmp_path / "archive"
    ses = hour_dir(root, "ses", 10)
    recs = [json.dumps(ses_delivery(f"m-{i}", f"r{i}@x.example")).encode() for i in range(40)]
    # a Firehose object in Firehose's own key layout: every record back to back, no
    # newline at all (about 10 KB, longer than --max-record-bytes below)
    fh_dir = tmp_path / "firehose" / "2026" / "11" / "20" / "10"
    fh_dir.mkdir(parents=True)
    (fh_dir / "stream-1-2026-11-20-10-00-00-3f1c2a9e-1b7d-4c4e-9d55-0a1b2c3d4e5f").write_bytes(
        b"".join(recs[:30])
    )
    # a file whose first record fits on one line, then back-to-back and pretty records
    pretty = json.dumps(ses_delivery("m-p", "p@x.example"), indent=2).encode()
    mixed = (
        recs[30]
        + b"\n"
        + recs[31]
        + recs[32]
        + b"\n"
        + pretty
        + b"\n"
        + recs[33]
        + b"  "
        + recs[34]
        + b"\n"
    )
    (ses / "mixed.json").write_bytes(mixed)
    big = json.dumps([sg(900, reason="x" * 5000)]).encode()
    sgdir = hour_dir(root, "sendgrid", 11)
    (sgdir / "a.json").write_bytes(b"\n".join([big] + good_posts(1, 3, start=950)) + b"\n")
    wh_path = tmp_path / "w.duckdb"
    p, r, _ = load(
        root,
        f"duckdb://{wh_path}",
        "--max-record-bytes",
        4096,
        "--source",
        f"ses={tmp_path / 'firehose'}?layout=firehose",
    )
    assert sum(len(x) for x in recs[:30]) > 4096
    assert p.returncode == 0, p.stderr[-3000:]
    per = r["per_provider"]
    assert per["ses"]["events_loaded"] == 36 and per["ses"]["dead_letters"] == 0
    assert per["sendgrid"]["events_loaded"] == 3 and per["sendgrid"]["dead_letters"] == 1
    assert adds_up(r)
    (dl,) = dead_letters(wh_path)
    assert dl["line"] == 1 and dl["raw_bytes"] == len(big) + 1
    assert dl["reason"].startswith(f"record of {len(big) + 1:,} bytes is over the 4,096-byte")
    # a bad value for the flag is a usage error naming what to pass
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "load",
            "--archive",
            str(root),
            "--date",
            DATE,
            "--warehouse",
            f"duckdb://{wh_path}",
            "--max-record-bytes",
            "lots",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2 and "positive number of bytes" in bad.stderr


def test_a_truncated_gzip_is_a_dead_letter_not_a_silent_loss(tmp_path):
    root = tmp_path / "archive"
    data = b"\n".join(good_posts(20, 40)) + b"\n"
    gz = gzip.compress(data, compresslevel=6)
    (hour_dir(root, "sendgrid") / "cut.json.gz").write_bytes(gz[: len(gz) * 2 // 3])
    (hour_dir(root, "sendgrid", 10) / "ok.json").write_bytes(b"\n".join(good_posts(1, 5, 5000)))
    wh_path = tmp_path / "w.duckdb"
    p, r, _ = load(root, f"duckdb://{wh_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert adds_up(r)
    reasons = [d["reason"] for d in dead_letters(wh_path)]
    assert any(x.startswith("gzip stream truncated after ") and "re-fetch" in x for x in reasons)
    assert r["events_loaded"] >= 5 + 40


def test_a_warehouse_created_before_raw_bytes_gains_the_column(tmp_path):
    from pipelines.events import DEAD_LETTER_FIELDS
    from pipelines.warehouse.duckdb import ddl_columns

    wh_path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(wh_path))
    old = tuple(f for f in DEAD_LETTER_FIELDS if f.name != "raw_bytes")
    con.execute(f"CREATE TABLE dead_letters ({ddl_columns(old)})")
    con.close()
    root = tmp_path / "archive"
    (hour_dir(root, "sendgrid") / "a.json").write_bytes(b"not json\n" + good_posts(1, 2)[0])
    p, r, _ = load(root, f"duckdb://{wh_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    (dl,) = dead_letters(wh_path)
    assert (dl["raw"], dl["raw_bytes"]) == ("not json", 8)


@pytest.mark.bigquery
def test_bigquery_dead_letters_table_gains_raw_bytes(bq_emulator, bq_dataset):
    from google.cloud import bigquery

    from pipelines.events import DEAD_LETTER_FIELDS, bigquery_schema
    from pipelines.warehouse.bigquery import BigQueryWarehouse

    client = bq_emulator.client()
    old = [
        bigquery.SchemaField.from_api_repr(f)
        for f in bigquery_schema([f for f in DEAD_LETTER_FIELDS if f.name != "raw_bytes"])
    ]
    client.create_table(bigquery.Table(f"test-project.{bq_dataset}.dead_letters", schema=old))
    BigQueryWarehouse("test-project", bq_dataset, api_endpoint=bq_emulator.url).ensure_schema()
    names = [f.name for f in client.get_table(f"test-project.{bq_dataset}.dead_letters").schema]
    assert names == [f.name for f in DEAD_LETTER_FIELDS]


def test_normalize_honours_the_limit_and_previews_without_leaks(cli, tmp_path):
    f = tmp_path / "x.json"
    f.write_bytes(
        json.dumps([sg(1, reason="y" * 3000 + " zqann@example.com")]).encode()
        + b"\n"
        + json.dumps([sg(2)]).encode()
        + b"\n"
    )
    p = cli("normalize", "--max-record-bytes", 2048, f)
    assert p.returncode == 3
    assert len([ln for ln in p.stdout.splitlines() if ln]) == 1
    (dl,) = [json.loads(ln) for ln in p.stderr.splitlines() if ln.startswith("{")]
    assert (
        dl["line"] == 1 and dl["raw_bytes"] > 3000 and "over the 2,048-byte limit" in dl["reason"]
    )
    assert "zqann" not in p.stderr


# --- the reader's properties -------------------------------------------------------------


def _blocks(data: bytes, cuts: list[int]):
    """``data`` in pieces cut at ``cuts`` (as a stream delivers it)."""
    pos = 0
    for c in sorted(set(cuts)):
        if pos < c < len(data):
            yield data[pos:c]
            pos = c
    yield data[pos:]


def _records(data: bytes, limit=DEFAULT_MAX_RECORD_BYTES, cuts=(), chunk_lines=3):
    return [
        (r.line, r.doc, r.error)
        for r in read_records(_blocks(data, list(cuts)), limit, chunk_lines=chunk_lines)
    ]


json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(alphabet=st.sampled_from(list('ab{}[]",\\:\n\t é')), max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet="abc{}", max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
).map(lambda v: {"v": v})
layouts = st.sampled_from(["ndjson", "pretty", "back-to-back", "mixed"])


def _encode(docs, layout, draw_sep):
    parts = []
    for i, d in enumerate(docs):
        if layout == "ndjson" or (layout == "mixed" and i % 3 == 0):
            parts.append(json.dumps(d).encode() + b"\n")
        elif layout == "pretty" or (layout == "mixed" and i % 3 == 1):
            parts.append(json.dumps(d, indent=2).encode() + b"\n")
        else:
            parts.append(json.dumps(d).encode() + draw_sep[i % len(draw_sep)])
    return b"".join(parts)


@SETTINGS
@given(
    st.lists(json_docs, min_size=1, max_size=12),
    layouts,
    st.lists(st.sampled_from([b"", b" ", b"\n", b"\r\n"]), min_size=1, max_size=3),
    st.lists(st.integers(0, 3000), max_size=6),
    st.integers(1, 5),
)
def test_every_layout_reads_the_same_documents_however_the_stream_is_cut(
    docs, layout, seps, cuts, chunk_lines
):
    data = _encode(docs, layout, seps)
    whole = [(r.doc, r.error) for r in iter_records(data)]
    assert whole == [(d, None) for d in docs]
    streamed = _records(data, cuts=cuts, chunk_lines=chunk_lines)
    assert [(d, e) for _, d, e in streamed] == whole
    # line numbers are the file's: each record starts on the line it says
    lines = data.split(b"\n")
    for line, _doc, _ in streamed:
        assert (
            lines[line - 1].lstrip()[:1] in (b"{", b"[")
            or b"}{" in lines[line - 1]
            or lines[line - 1].rstrip().endswith((b"}", b"]"))
        )


@SETTINGS
@given(
    st.lists(json_docs, min_size=2, max_size=30),
    st.lists(st.sampled_from([b"", b" ", b"\t"]), min_size=1, max_size=3),
    st.lists(st.integers(0, 5000), max_size=6),
    st.integers(1, 6),
    st.booleans(),
)
def test_a_line_longer_than_the_limit_is_read_document_by_document(
    docs, seps, cuts, chunk_lines, ascii_only
):
    encoded = [json.dumps(d, ensure_ascii=ascii_only).encode() for d in docs]
    data = b"".join(e + seps[i % len(seps)] for i, e in enumerate(encoded)) + b"\n"
    limit = max(len(e) for e in encoded) + 8  # every document fits, the line does not
    got = _records(data, limit=limit, cuts=cuts, chunk_lines=chunk_lines)
    assert [(line, d, e) for line, d, e in got] == [(1, d, None) for d in docs]


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(["[", '{"a":']), st.integers(1, 3000)), min_size=1, max_size=4
    ),
    st.lists(st.integers(0, 20000), max_size=4),
)
def test_arbitrary_depth_never_crashes_and_never_takes_neighbours(nests, cuts):
    good = b'{"ok": 1}'
    lines = [good]
    for opener, depth in nests:
        closer = "]" if opener == "[" else "}"
        inner = "1" if opener != "[" else ""
        lines += [(opener * depth + inner + closer * depth).encode(), good]
    data = b"\n".join(lines) + b"\n"
    got = _records(data, cuts=cuts)
    assert len(got) == 2 * len(nests) + 1
    assert [d for _, d, _ in got[::2]] == [{"ok": 1}] * (len(nests) + 1)
    for (_, depth), (_, doc, err) in zip(nests, got[1::2], strict=True):
        assert (err == TOO_DEEP) == (depth > MAX_JSON_DEPTH)
        if depth <= MAX_JSON_DEPTH:
            assert err is None and doc is not None


@SETTINGS
@given(
    st.lists(st.integers(0, 6000), min_size=1, max_size=8),
    st.integers(64, 4096),
    st.lists(st.integers(0, 50000), max_size=5),
    st.sampled_from([b"x", b"[", b'{"s": "', b" ", b"\xff"]),
)
def test_arbitrary_sizes_records_over_the_limit_are_skipped_and_the_rest_read(
    sizes, limit, cuts, filler
):
    lines, expect = [], []
    for i, n in enumerate(sizes):
        lines.append(b'{"i": %d}' % i)
        expect.append(("ok", i))
        if n:
            body = (filler * n)[:n]
            lines.append(body)
            expect.append(("big", len(body)) if len(body) > limit else ("small", len(body)))
    data = b"\n".join(lines) + b"\n"
    recs = list(read_records(_blocks(data, cuts), limit, chunk_lines=2))
    oks = [r.doc["i"] for r in recs if isinstance(r.doc, dict) and "i" in r.doc]
    assert oks == list(range(len(sizes)))
    bigs = [r for r in recs if isinstance(r.raw, RawPreview)]
    want_big = [n for kind, n in expect if kind == "big"]
    # (the length counts the newline the record was skipped to)
    assert [r.raw.total_bytes for r in bigs] == [n + 1 for n in want_big]
    for r in bigs:
        assert len(r.raw) <= 8192 and "over the" in r.error


def test_a_gzip_bomb_is_decompressed_in_bounded_blocks():
    data = gzip.compress(b"x" * (64 * 1024 * 1024) + b"\n" + b'{"a": 1}\n', compresslevel=9)
    assert len(data) < 200_000
    blocks = read_blocks(io.BytesIO(data))
    sizes = []
    recs = []
    for _first, chunk in read_chunks(iter(_tap(blocks, sizes)), 10, 1024):
        recs += list(iter_records(chunk))
    assert max(sizes) <= 1024 * 1024 and blocks.problem is None
    assert isinstance(recs[0].raw, RawPreview) and recs[0].raw.total_bytes == 64 * 1024 * 1024 + 1
    assert recs[1].doc == {"a": 1}


def _tap(blocks, sizes):
    for b in blocks:
        sizes.append(len(b))
        yield b


def test_gzip_members_back_to_back_and_garbage_after_them():
    one, two = gzip.compress(b'{"a": 1}\n'), gzip.compress(b'{"b": 2}\n')
    blocks = read_blocks(io.BytesIO(one + two), block=5)
    assert b"".join(blocks) == b'{"a": 1}\n{"b": 2}\n' and blocks.problem is None
    bad = read_blocks(io.BytesIO(one + b"garbage"))
    assert b"".join(bad) == b'{"a": 1}\n' and "not gzip" in bad.problem
    corrupt = read_blocks(io.BytesIO(b"\x1f\x8b" + b"\x00" * 40))
    assert b"".join(corrupt) == b"" and corrupt.problem.startswith("corrupt gzip data")
    with pytest.raises(zlib.error):
        zlib.decompress(b"\x00" * 10)  # (the corrupt case above is a real zlib error)


# --- what reaches the warehouse: the normalize step on streamed chunks --------------------

AT_FORMS = ["@", "%40", "%2540", "\\u0040", "&#64;", "&#x40;"]
# ``Z``/``Q`` occur only in local parts, so any surviving piece of one shows
local_parts = st.from_regex(r"ZQ[a-z0-9._+-]{0,12}", fullmatch=True)
address_parts = st.tuples(
    local_parts, st.sampled_from(AT_FORMS), st.sampled_from(["example.com", "x.jp", ""])
)
addresses = address_parts.map("".join)
junk = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="ZQ\n\r"), max_size=40)


@st.composite
def poisoned_lines(draw):
    """A day's file: good SendGrid posts (addresses in url/reason), garbage quoting
    addresses, records cut anywhere (also right after an at-sign), long lines."""
    lines, good = [], 0
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["good", "garbage", "cut", "long", "deep"]))
        addr = draw(addresses)
        if kind == "good":
            ev = sg(i, "click", url=f"https://t.example/?to={addr}", reason=draw(junk) + " " + addr)
            lines.append(json.dumps([ev]).encode())
            good += 1
        elif kind == "garbage":
            lines.append((draw(junk) + addr + draw(junk)).encode())
        elif kind == "cut":
            # a record cut anywhere after the at-sign (right after it: the domain is lost)
            loc, at, dom = draw(address_parts)
            text = json.dumps([sg(i, url=f"https://t.example/?to={loc}{at}{dom}&x=1")])
            after_at = text.index(loc) + len(loc) + len(json.dumps(at)) - 2
            cut = after_at + draw(st.integers(0, len(dom) + 3))
            lines.append(text[:cut].encode())
        elif kind == "long":
            lines.append((draw(junk) + "y" * draw(st.integers(2000, 20000)) + " " + addr).encode())
        else:
            d = draw(st.integers(255, 3000))
            lines.append(b"[" * d + json.dumps(addr).encode() + b"]" * d)
    return lines, good


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(poisoned_lines(), st.integers(1000, 30000), st.integers(1, 4))
def test_poisoned_days_never_leak_never_crash_and_always_add_up(spec, limit, chunk_lines):
    from datetime import date

    from pipelines.hashing import EmailHasher
    from pipelines.load import NormalizeChunkFn, NormalizeSettings

    lines, good = spec
    data = b"\n".join(lines) + b"\n"
    fn = NormalizeChunkFn(
        NormalizeSettings(hasher=EmailHasher("prop-key-0123456789"), max_record_bytes=limit),
        "load-1",
        datetime(2026, 11, 20, tzinfo=timezone.utc),
    )
    totals = {
        "records_read": 0,
        "events_normalized": 0,
        "dead_letters": 0,
        "records_without_event": 0,
    }
    stored = []
    for i, (first, chunk) in enumerate(read_chunks([data], chunk_lines, limit)):
        for out in fn.process(("file://a", "sendgrid", i, first, chunk, date(2026, 11, 20))):
            for counts in out.stats.values():
                for k in totals:
                    totals[k] += counts.get(k, 0)
            stored += out.events.select(["url", "reason"]).to_pylist()
            stored += out.dead_letters.select(["reason", "raw"]).to_pylist()
            assert all(n is None or n >= 0 for n in out.dead_letters["raw_bytes"].to_pylist())
    dump = json.dumps(stored)
    assert "Z" not in dump and "Q" not in dump, dump[:2000]
    assert totals["records_read"] == (
        totals["events_normalized"] + totals["dead_letters"] + totals["records_without_event"]
    )
    assert totals["events_normalized"] >= good


def test_the_default_limit_is_the_collectors_body_limit():
    """Anything the collector accepted fits a record (the default of --max-record-bytes)."""
    from pipelines.collector.app import DEFAULT_MAX_BODY_BYTES
    from pipelines.load import NormalizeSettings

    assert DEFAULT_MAX_RECORD_BYTES == DEFAULT_MAX_BODY_BYTES
    assert (
        NormalizeSettings.__dataclass_fields__["max_record_bytes"].default == DEFAULT_MAX_BODY_BYTES
    )


@pytest.mark.parametrize("shape", ["line", "deep", "pretty"])
def test_a_skipped_records_preview_cut_inside_an_address_keeps_no_part_of_it(shape):
    """A record over --max-record-bytes is previewed from its first bytes only: when that
    cut falls inside an address's local part, none of the local part may show (found
    by the property test above: ``[[[…["ZQ000…`` kept ``ZQ000…``)."""
    from datetime import date

    from pipelines.hashing import EmailHasher
    from pipelines.load import NormalizeChunkFn, NormalizeSettings

    limit = 1000
    local = "ZQsecretlocalpart0123456789"
    pad = {"line": b'{"x":"' + b"y" * (limit - 12), "deep": b"[" * (limit - 4)}.get(shape)
    if shape == "pretty":  # a document over several lines, cut on a line's end
        record = b'{\n  "a": "' + b"y" * 400 + b'",\n  "to": "' + local.encode()
        record += b'@example.com",\n  "b": "' + b"z" * 900 + b'"\n}'
    else:
        record = pad + json.dumps(f"{local}@example.com").encode() + b"]" * (limit - 4)
    fn = NormalizeChunkFn(
        NormalizeSettings(hasher=EmailHasher("prop-key-0123456789"), max_record_bytes=limit),
        "load-1",
        datetime(2026, 11, 20, tzinfo=timezone.utc),
    )
    dead = []
    for i, (first, chunk) in enumerate(read_chunks([record + b"\n"], 2, limit)):
        for out in fn.process(("file://a", "sendgrid", i, first, chunk, date(2026, 11, 20))):
            dead += out.dead_letters.select(["reason", "raw"]).to_pylist()
    (dl,) = dead
    assert "over the 1,000-byte limit" in dl["reason"] and dl["raw"].endswith("…")
    assert "ZQ" not in dl["raw"] and "secret" not in dl["raw"], dl["raw"][-200:]
