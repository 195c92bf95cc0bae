"""Source definitions and the layouts' name filters (pipelines/sources.py)."""

from __future__ import annotations

import gzip
import os
from datetime import date

import pytest

from pipelines.sources import (
    PROVIDERS,
    Source,
    SourceError,
    accept,
    archive_sources,
    explain_empty,
    list_day,
    list_days,
    parse_source,
    resolve_sources,
)

DAY = date(2026, 11, 20)


def test_parse_source_specs():
    s = parse_source("ses=s3://bucket/firehose/?layout=firehose")
    assert s == Source("ses", "s3://bucket/firehose", "firehose")
    assert s.spec == "ses=s3://bucket/firehose?layout=firehose"
    assert parse_source("SendGrid=gs://b/p") == Source("sendgrid", "gs://b/p", "hourly")
    local = parse_source("cmc=./rel/dir")
    assert local.root == os.path.abspath("rel/dir") and local.is_local()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("s3://bucket/x", "PROVIDER=URI"),
        ("mailgun=s3://b/x", "unknown provider 'mailgun'"),
        ("ses=s3://b/x?layout=daily", "unknown layout 'daily'"),
        ("ses=s3://b/x?format=json", "unknown option 'format'"),
        ("ses=", "PROVIDER=URI"),
    ],
)
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(SourceError, match=message):
        parse_source(spec)


def test_archive_equals_three_sources_and_env_gives_the_dags_the_same():
    assert archive_sources("s3://b/a") == [Source(p, f"s3://b/a/{p}") for p in PROVIDERS]
    env = {"MAILPULSE_SOURCES": "ses=s3://b/f?layout=firehose  sendgrid=gs://g/sg"}
    assert resolve_sources(None, [], default_archive="/d", environ=env) == [
        Source("ses", "s3://b/f", "firehose"),
        Source("sendgrid", "gs://g/sg"),
    ]
    # --source alone: only the sources, not the default archive
    assert resolve_sources(None, ["cmc=s3://b/c"], default_archive="/d", environ={}) == [
        Source("cmc", "s3://b/c")
    ]
    # nothing given: the default archive
    assert resolve_sources(None, [], default_archive="/d", environ={}) == archive_sources("/d")
    # --archive and --source together; duplicates once
    got = resolve_sources("/a", ["ses=/a/ses", "ses=/x"], environ={})
    assert got == [*archive_sources("/a"), Source("ses", "/x")]


@pytest.mark.parametrize(
    "layout, name, reason",
    [
        ("hourly", "w1-000001.json.gz", None),
        ("hourly", "batch.ndjson", None),
        ("hourly", "w1-000001.json.open", "not published yet"),
        ("hourly", ".w1-000001.json.gz.123.tmp", "not published yet"),
        ("hourly", "export.csv", "extension"),
        (
            "hourly",
            "ses-events-1-2026-11-20-10-15-03-0f3c2a9e-1b2c-4d5e-8f90-123456789abc",
            "extension",
        ),
        ("firehose", "ses-events-1-2026-11-20-10-15-03-0f3c2a9e-1b2c-4d5e-8f90-123456789abc", None),
        (
            "firehose",
            "my-stream-12-2026-11-20-10-15-03-0f3c2a9e-1b2c-4d5e-8f90-123456789abc.gz",
            None,
        ),
        ("firehose", "notes.txt", "key pattern"),
        ("firehose", "w1-000001.json.gz", "key pattern"),
    ],
)
def test_layout_name_filters(layout, name, reason):
    assert accept(Source("ses", "/r", layout), name) == reason


def test_listing_counts_what_it_skips_and_explains_an_empty_day(tmp_path):
    root = tmp_path / "archive"
    hour = root / "ses" / "2026" / "11" / "20" / "10"
    hour.mkdir(parents=True)
    (hour / "a.csv").write_text("x")
    (hour / "b.json.open").write_text("{}")
    (hour / "empty.json").write_bytes(b"")
    other = root / "mailgun" / "2026" / "11" / "20" / "10"
    other.mkdir(parents=True)
    (other / "c.json").write_text("{}")
    srcs = archive_sources(str(root))
    listing = list_days(srcs, [DAY])
    assert listing.files == []
    assert listing.skipped == {"extension": 1, "not published yet": 1, "empty": 1}
    msg = explain_empty(listing, srcs, [DAY])
    assert f"{root}/ses/2026/11/20/*/*" in msg
    assert "1 by extension" in msg and "1 in 'mailgun'" in msg and "--allow-empty" in msg


def test_listing_reads_gzip_and_plain_with_identity(tmp_path):
    hour = tmp_path / "sg" / "2026" / "11" / "20" / "07"
    hour.mkdir(parents=True)
    (hour / "a.json.gz").write_bytes(gzip.compress(b"[]\n"))
    (hour / "b.json").write_bytes(b"[]\n")
    listing = list_day(Source("sendgrid", str(tmp_path / "sg")), DAY)
    assert [(os.path.basename(f.uri), f.provider, f.day) for f in listing.files] == [
        ("a.json.gz", "sendgrid", DAY),
        ("b.json", "sendgrid", DAY),
    ]
    assert all(f.size > 0 and float(f.generation) > 0 for f in listing.files)
