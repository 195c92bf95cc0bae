"""The settings layer (pipelines/settings.py): one Settings built once from the flags and
the environment, or from a DAG run's params; the normalizer settings in one picklable
object."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import TEST_HASH_KEY, run_cli

from pipelines.cli import build_parser
from pipelines.errors import UsageError
from pipelines.hashing import DEVELOPMENT_KEY, EmailHasher
from pipelines.normalizers import NormalizeSettings, normalize_bytes
from pipelines.records import DEFAULT_MAX_RECORD_BYTES
from pipelines.settings import DEFAULT_DAYS, Settings
from pipelines.sources import Source, archive_sources

CMC_V2 = Path(__file__).resolve().parent / "payloads" / "cmc" / "v2_deliveries.json"
KEY = TEST_HASH_KEY


def parse(*argv: str):
    args, extra = build_parser().parse_known_args(list(argv))
    args.extra = extra
    return args


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no MAILPULSE_* from the caller) with the data dir in tmp."""
    out = {"MAILPULSE_DATA_DIR": str(tmp_path / "data"), "MAILPULSE_HASH_KEY": KEY}
    out.update(extra)
    return {k: v for k, v in out.items() if v}


# -- flags and environment --------------------------------------------------------------
def test_flags_win_over_the_environment_and_the_environment_over_defaults(tmp_path):
    e = env(tmp_path, MAILPULSE_SOURCES="ses=s3://bucket/firehose?layout=firehose")
    # nothing given: $MAILPULSE_SOURCES (and not the default archive)
    s = Settings.from_args(parse("load"), e)
    assert s.sources == (Source("ses", "s3://bucket/firehose", "firehose"),)
    assert s.explicit_sources and s.archive is None
    # a flag wins over the variable
    s = Settings.from_args(parse("load", "--source", "cmc=/x/cmc"), e)
    assert s.sources == (Source("cmc", "/x/cmc"),)
    s = Settings.from_args(parse("load", "--archive", "/arch"), e)
    assert s.sources == tuple(archive_sources("/arch")) and not s.explicit_sources
    # neither: the default archive and warehouse under $MAILPULSE_DATA_DIR
    s = Settings.from_args(parse("load"), env(tmp_path))
    data = (tmp_path / "data").resolve()
    assert s.sources == tuple(archive_sources(str(data / "archive")))
    assert s.warehouse == f"duckdb://{data / 'warehouse.duckdb'}"
    assert not s.explicit_sources
    s = Settings.from_args(parse("load", "--warehouse", "duckdb:///w/x.duckdb"), e)
    assert s.warehouse == "duckdb:///w/x.duckdb"


def test_flags_reach_the_normalizer_settings_and_the_load(tmp_path):
    args = parse(
        "load",
        "--archive",
        "/a",
        "--ses-category-tag",
        "campaign",
        "--cmc-timezone",
        "UTC",
        "--cmc-category-field",
        "apiData",
        "--max-record-bytes",
        "4096",
        "--days",
        "2",
        "--chunk-lines",
        "100",
        "--staging",
        "/tmp/st",
        "--num_workers=3",
    )
    s = Settings.from_args(args, env(tmp_path))
    n = s.normalize
    assert (n.ses_category_tag, n.cmc_timezone, n.cmc_category_field, n.max_record_bytes) == (
        "campaign",
        "UTC",
        "apiData",
        4096,
    )
    assert n.hasher("a@example.com") == EmailHasher(KEY)("a@example.com")
    assert s.hasher is n.hasher
    kw = s.load_kwargs()
    assert kw["config"] is n and kw["days"] == 2 and kw["chunk_lines"] == 100
    assert kw["staging"] == "/tmp/st" and kw["beam_args"] == ["--num_workers=3"]
    assert kw["sources"] == archive_sources("/a")
    # defaults
    d = Settings.from_args(parse("load"), env(tmp_path)).normalize
    assert (d.ses_category_tag, d.cmc_timezone, d.cmc_category_field, d.max_record_bytes) == (
        "category",
        "Asia/Tokyo",
        None,
        DEFAULT_MAX_RECORD_BYTES,
    )
    assert Settings.from_args(parse("load"), env(tmp_path)).days == DEFAULT_DAYS


def test_commands_that_read_no_records_need_no_key(tmp_path):
    s = Settings.from_args(
        parse("outcomes", "--warehouse", "bigquery://p/d", "--window-days", "7"),
        env(tmp_path, MAILPULSE_HASH_KEY=""),
    )
    assert s.hasher is None and s.normalize is None and s.window_days == 7
    with pytest.raises(UsageError, match="--window-days must be at least 1"):
        Settings.from_args(parse("outcomes", "--window-days", "0"), env(tmp_path))


def test_a_missing_key_names_the_fix(tmp_path):
    no_key = env(tmp_path, MAILPULSE_HASH_KEY="")
    with pytest.raises(UsageError) as err:
        Settings.from_args(parse("load", "--warehouse", "bigquery://p/d"), no_key)
    assert "MAILPULSE_HASH_KEY is not set" in str(err.value)
    assert "export MAILPULSE_HASH_KEY=" in str(err.value)
    with pytest.raises(UsageError) as err:
        Settings.from_params({"warehouse": "bigquery://p/d"}, no_key)
    assert "export MAILPULSE_HASH_KEY=" in str(err.value)
    assert "mailpulse_hash_secret" in str(err.value)  # the DAGs' other place for it
    # the embedded default falls back to the development key
    s = Settings.from_args(parse("load"), no_key)
    assert s.hasher("a@b.c") == EmailHasher(DEVELOPMENT_KEY)("a@b.c")


def test_bad_values_name_the_flag_or_param(tmp_path):
    e = env(tmp_path)
    with pytest.raises(UsageError, match="--cmc-timezone 'Mars/Base' is not a known time zone"):
        Settings.from_args(parse("load", "--cmc-timezone", "Mars/Base"), e)
    with pytest.raises(UsageError, match="--chunk-lines must be a positive number"):
        Settings.from_args(parse("load", "--chunk-lines", "0"), e)
    with pytest.raises(UsageError, match="--days must be at least 1"):
        Settings.from_args(parse("load", "--days", "0"), e)
    with pytest.raises(UsageError, match="unknown provider 'mailgun'"):
        Settings.from_args(parse("load", "--source", "mailgun=/x"), e)
    with pytest.raises(UsageError, match="param 'cmc_timezone' 'Mars/Base' is not a known"):
        Settings.from_params({"cmc_timezone": "Mars/Base"}, e)
    with pytest.raises(UsageError, match="param 'days' must be a positive whole number"):
        Settings.from_params({"days": "many"}, e)
    with pytest.raises(UsageError, match="param 'max_record_bytes' must be a positive"):
        Settings.from_params({"max_record_bytes": 0}, e)
    with pytest.raises(UsageError, match="param 'beam_args' must be a list of strings"):
        Settings.from_params({"beam_args": [1, 2]}, e)


# -- DAG params -------------------------------------------------------------------------
def test_params_win_over_the_environment_and_text_values_are_read(tmp_path):
    e = env(
        tmp_path,
        MAILPULSE_WAREHOUSE="duckdb:///env/w.duckdb",
        MAILPULSE_ARCHIVE="/env/archive",
        MAILPULSE_SOURCES="ses=/env/ses",
    )
    s = Settings.from_params({}, e)
    assert s.warehouse == "duckdb:///env/w.duckdb"
    assert s.sources == tuple(archive_sources("/env/archive"))
    s = Settings.from_params(
        {
            "warehouse": "duckdb:///p/w.duckdb",
            "archive": "/p/archive",
            "source_specs": ["ses=s3://b/f?layout=firehose"],
            "runner": "DataflowRunner",
            "beam_args": "--project=P --region=R",  # a Variable holds text
            "days": "2",
            "window_days": 7,
            "ses_category_tag": "campaign",
            "cmc_category_field": "apiData",
            "cmc_timezone": "UTC",
            "max_record_bytes": "65536",
            "sources": {"warehouse": "param"},  # the DAG's where-from map: ignored
        },
        e,
    )
    assert s.warehouse == "duckdb:///p/w.duckdb"
    assert s.sources == (
        *archive_sources("/p/archive"),
        Source("ses", "s3://b/f", "firehose"),
    )
    assert s.runner == "DataflowRunner" and s.beam_args == ("--project=P", "--region=R")
    assert (s.days, s.window_days) == (2, 7)
    n = s.normalize
    assert (n.ses_category_tag, n.cmc_category_field, n.cmc_timezone, n.max_record_bytes) == (
        "campaign",
        "apiData",
        "UTC",
        65536,
    )
    # empty values are "not given": the environment, then the defaults
    s = Settings.from_params({"warehouse": "", "cmc_category_field": None}, e)
    assert s.warehouse == "duckdb:///env/w.duckdb" and s.normalize.cmc_category_field is None
    # without a key (the DAG's first task): everything checked, no hasher built
    s = Settings.from_params(
        {"warehouse": "bigquery://p/d"}, env(tmp_path, MAILPULSE_HASH_KEY=""), hash_key=False
    )
    assert s.hasher is None and s.normalize is None


def test_as_params_round_trips(tmp_path):
    e = env(tmp_path)
    s = Settings.from_args(
        parse(
            "load",
            "--archive",
            "/a",
            "--source",
            "ses=s3://b/f?layout=firehose",
            "--cmc-category-field",
            "apiData",
            "--days",
            "3",
        ),
        e,
    )
    p = s.as_params()
    json.dumps(p)  # JSON-ready (an XCom), and no secret in it
    assert KEY not in json.dumps(p)
    back = Settings.from_params(p, e)
    assert back.as_params() == p
    assert back.sources == s.sources


# -- the normalizer settings ------------------------------------------------------------
def test_normalizer_settings_pickle_and_set_the_file_per_copy():
    from apache_beam.internal import pickler

    n = NormalizeSettings(hasher=EmailHasher(KEY), cmc_timezone="UTC", cmc_category_field="apiData")
    when = datetime(2026, 11, 20, tzinfo=timezone.utc)
    f = n.for_file("gs://b/cmc/x.json", when)
    assert (f.source_uri, f.ingested_at) == ("gs://b/cmc/x.json", when)
    assert (n.source_uri, n.ingested_at) == ("", None)  # the run's settings are unchanged
    with pytest.raises(AttributeError):
        n.cmc_category_field = "other"  # frozen: one value for the whole run
    for dumps, loads in ((pickle.dumps, pickle.loads), (pickler.dumps, pickler.loads)):
        back = loads(dumps(f))
        assert replace(back, hasher=f.hasher) == f  # every field (hashers: by identity) ...
        assert back.cmc_tz.key == "UTC"
        raw = CMC_V2.read_bytes()
        a, b = normalize_bytes(raw, f).events, normalize_bytes(raw, back).events
        assert a == b and a[0]["categories"] == ["CMC00123"]  # ... and the same hashes
        assert a[0]["source_uri"] == "gs://b/cmc/x.json" and a[0]["ingested_at"] == when
    assert KEY not in repr(n)
    # Settings themselves pickle too (the DAG builds them inside the task)
    s = Settings(warehouse="duckdb:///x", normalize=n, hasher=n.hasher)
    assert pickle.loads(pickle.dumps(s)).normalize.cmc_category_field == "apiData"


def test_normalize_command_reads_the_cmc_flags(tmp_path):
    """The flags reach the normalizers through Settings (a real `mailpulse` process)."""
    proc = run_cli(
        "normalize", "--cmc-category-field", "apiData", "--cmc-timezone", "UTC", str(CMC_V2)
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["categories"] for e in events] == [["CMC00123"], ["CMC00123"]]
    assert events[0]["event_ts"].startswith("2015-12-14T10:53:52")  # read as UTC
    proc = run_cli("normalize", "--cmc-timezone", "Mars/Base", str(CMC_V2))
    assert proc.returncode == 2
    assert "--cmc-timezone 'Mars/Base' is not a known time zone" in proc.stderr
