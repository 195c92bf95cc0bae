"""The Beam load job: exact accounting, idempotent reruns, atomic commits."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import ROOT, TEST_HASH_KEY, run_cli

from pipelines.hashing import EmailHasher
from pipelines.load import (
    DropDuplicates,
    ListArchiveFiles,
    NormalizeRecords,
    NormalizeSettings,
    ReadArchives,
    run_load,
    split_chunks,
)
from pipelines.sources import archive_sources, list_days
from pipelines.warehouse import open_warehouse

DAY = date(2026, 11, 20)
T0 = int(datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc).timestamp())


def sg(i, event="delivered", ts=None, **extra):
    ev = {
        "email": f"user{i}@example.com",
        "timestamp": ts if ts is not None else T0 + i,
        "event": event,
        "sg_event_id": f"sg-{event}-{i}",
        "sg_message_id": f"msg{i}.filter0001.1.2",
        "category": ["news"],
    }
    ev.update(extra)
    return ev


def write_lines(path: Path, lines: list[str], gz: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def ses_delivery(msg, recipients, ts="2026-11-20T10:00:00.000Z"):
    return {
        "eventType": "Delivery",
        "mail": {
            "timestamp": ts,
            "messageId": msg,
            "destination": recipients,
            "tags": {"category": ["news"]},
        },
        "delivery": {"timestamp": ts, "recipients": recipients, "smtpResponse": "250 ok"},
    }


def cmc_body(kind, items):
    return {"event_type": kind, "server_composition": "pro", "event": {kind: items}}


@pytest.fixture
def archive(tmp_path):
    """A day with every kind of record the accounting has to place."""
    root = tmp_path / "archive"
    hour = root / "sendgrid" / "2026" / "11" / "20"
    post1 = json.dumps([sg(i) for i in range(10)])
    post2 = json.dumps(
        [sg(i, "open") for i in range(5)] + [{"event": "account_status_change", "timestamp": T0}]
    )
    # a corrupt line quoting an address, and a retry within the same file
    write_lines(hour / "09" / "a.json.gz", [post1, post2, '{"email": "leak@example.com", ', post1])
    write_lines(hour / "10" / "b.json.gz", [post1])  # retry in another file
    # a late event: happened the previous day, archived today
    late = json.dumps([sg(99, "delivered", ts=T0 - 86400)])
    write_lines(
        hour / "11" / "c.json", [late, json.dumps([sg(1, "bounce", type="blocked"), 5])], gz=False
    )
    ses = root / "ses" / "2026" / "11" / "20" / "10"
    write_lines(
        ses / "firehose-1.json.gz",
        [
            json.dumps(ses_delivery("m-ses-1", ["a@x.jp", "b@x.jp", "c@x.jp"])),
            json.dumps({"Type": "SubscriptionConfirmation", "Message": "confirm"}),
            json.dumps({"eventType": "Bounce"}),  # no mail object: dead letter
        ],
    )
    cmc = root / "cmc" / "2026" / "11" / "20" / "05"
    item = {
        "created": "2026-11-20 14:00:00",
        "messageId": "<c1@example.com>",
        "to": "u@example.jp",
        "status": "failed",
        "reason": "550 5.1.1 unknown",
    }
    write_lines(
        cmc / "x.json",
        [
            json.dumps(cmc_body("deliveries", [item])),
            json.dumps(
                cmc_body("bounces", [dict(item, status="2", created="2026-11-20 14:00:01")])
            ),
        ],
        gz=False,
    )
    # another day's files are not read
    write_lines(
        root / "sendgrid" / "2026" / "11" / "21" / "00" / "z.json.gz", [json.dumps([sg(500)])]
    )
    return root


def config():
    return NormalizeSettings(hasher=EmailHasher(TEST_HASH_KEY))


def test_load_accounts_for_every_record(archive, tmp_path):
    wh = f"duckdb://{tmp_path}/w.duckdb"
    report = run_load(str(archive), DAY, wh, config=config())
    p = report.per_provider
    # SendGrid: post1 (10) x3, post2 (5 opens + 1 account event), 1 corrupt line, late (1),
    # blocked bounce (1) + a non-object batch item (1)
    assert p["sendgrid"] == {
        "records_read": 10 * 3 + 6 + 1 + 1 + 2,
        "events_loaded": 17,
        "duplicates_in_batch": 20,
        "already_loaded": 0,
        "dead_letters": 2,
        "records_without_event": 1,
    }
    # SES: 3 recipients, a subscription confirmation (no event), a record without mail
    assert p["ses"] == {
        "records_read": 5,
        "events_loaded": 3,
        "duplicates_in_batch": 0,
        "already_loaded": 0,
        "dead_letters": 1,
        "records_without_event": 1,
    }
    # CMC: failed delivery + bounce of the same message: two events (outcomes count once)
    assert p["cmc"]["events_loaded"] == 2 and p["cmc"]["records_read"] == 2
    assert report.adds_up()
    assert report.files_read == 5

    w = open_warehouse(wh)
    rows = w.query(
        "SELECT event_date, count(*) AS n FROM events "
        "WHERE event_date BETWEEN @a AND @b GROUP BY 1 ORDER BY 1",
        {"a": date(2026, 11, 1), "b": date(2026, 11, 30)},
    ).to_pylist()
    # the late event lands in its own event_date
    assert rows == [
        {"event_date": date(2026, 11, 19), "n": 1},
        {"event_date": date(2026, 11, 20), "n": 21},
    ]
    dls = w.query(
        "SELECT source_uri, line, record_index, reason FROM dead_letters ORDER BY source_uri, line"
    ).to_pylist()
    assert len(dls) == 3
    assert any(d["line"] == 3 and d["source_uri"].endswith("a.json.gz") for d in dls)
    assert any(
        "not an event object" in d["reason"]
        and d["record_index"] == 1
        and d["source_uri"].endswith("c.json")
        and d["line"] == 2
        for d in dls
    )
    assert any("no mail object" in d["reason"] for d in dls)
    # no plain address reaches the warehouse
    dump = json.dumps(w.query("SELECT * FROM events").to_pylist(), default=str)
    assert "user1@example.com" not in dump and "a@x.jp" not in dump
    dls_dump = json.dumps(w.query("SELECT * FROM dead_letters").to_pylist(), default=str)
    assert "leak@example.com" not in dls_dump and "[redacted]@example.com" in dls_dump


def test_rerun_adds_nothing_and_dead_letters_are_not_duplicated(archive, tmp_path):
    wh = f"duckdb://{tmp_path}/w.duckdb"
    first = run_load(str(archive), DAY, wh, config=config())
    # the manifest: a rerun reads nothing (every file is loaded, unchanged)
    second = run_load(str(archive), DAY, wh, config=config())
    assert (second.files_read, second.files_skipped, second.status) == (0, 5, "up_to_date")
    assert second.totals["records_read"] == 0 and second.adds_up()
    # --full reads everything again and stores nothing new
    third = run_load(str(archive), DAY, wh, config=config(), full=True)
    assert third.files_read == 5 and third.totals["events_loaded"] == 0
    assert third.totals["already_loaded"] == first.totals["events_loaded"]
    assert third.totals["records_read"] == first.totals["records_read"]
    assert third.adds_up()
    w = open_warehouse(wh)
    assert w.query("SELECT count(*) AS n FROM dead_letters").to_pylist()[0]["n"] == 3
    loads = w.query(
        "SELECT events_loaded, already_loaded, files_read, files_skipped "
        "FROM loads ORDER BY started_at"
    ).to_pylist()
    # 17 SendGrid + 3 SES + 2 CMC events
    assert loads == [
        {"events_loaded": 22, "already_loaded": 0, "files_read": 5, "files_skipped": 0},
        {"events_loaded": 0, "already_loaded": 0, "files_read": 0, "files_skipped": 5},
        {"events_loaded": 0, "already_loaded": 22, "files_read": 5, "files_skipped": 0},
    ]
    files = w.query("SELECT source_uri, records FROM loaded_files ORDER BY 1").to_pylist()
    assert len(files) == 5 and len({f["source_uri"] for f in files}) == 5


def test_retry_crossing_midnight_is_not_counted_twice(tmp_path):
    """SendGrid retries for up to 24 h: yesterday's event may sit in today's archive."""
    root = tmp_path / "archive"
    ev = sg(7, ts=T0 - 86400 + 3600 * 14)  # 2026-11-19 23:00
    write_lines(root / "sendgrid" / "2026" / "11" / "19" / "23" / "a.json.gz", [json.dumps([ev])])
    write_lines(
        root / "sendgrid" / "2026" / "11" / "20" / "08" / "b.json.gz", [json.dumps([ev, sg(8)])]
    )
    wh = f"duckdb://{tmp_path}/w.duckdb"
    r1 = run_load(str(root), date(2026, 11, 19), wh, config=config())
    r2 = run_load(str(root), DAY, wh, config=config())
    assert r1.totals["events_loaded"] == 1
    assert (r2.totals["events_loaded"], r2.totals["already_loaded"]) == (1, 1)


def test_empty_day_records_an_empty_load(tmp_path):
    (tmp_path / "archive").mkdir()
    wh = f"duckdb://{tmp_path}/w.duckdb"
    report = run_load(str(tmp_path / "archive"), DAY, wh, config=config())
    assert report.totals["records_read"] == 0 and report.files_read == 0
    assert report.status == "empty" and "no archive files for 2026-11-20" in report.message
    assert open_warehouse(wh).query("SELECT status FROM loads").to_pylist() == [{"status": "empty"}]


def test_split_chunks_keeps_line_numbers_and_whole_documents():
    data = b"".join(b'{"a": %d}\n' % i for i in range(10))
    chunks = list(split_chunks(data, 4))
    assert [c[0] for c in chunks] == [1, 5, 9]
    assert b"".join(c[1] for c in chunks) == data
    pretty = b'{\n  "event_type": "bounces",\n  "event": {}\n}\n'
    assert list(split_chunks(pretty, 1)) == [(1, pretty)]


def test_pipeline_transforms_with_test_pipeline(archive):
    """The graph's composite transforms, run with TestPipeline + assert_that."""
    ingested = datetime(2026, 11, 20, tzinfo=timezone.utc)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        files = list_days(archive_sources(str(archive)), [DAY]).files
        chunks = (
            p
            | "List" >> ListArchiveFiles(files)
            | "Read" >> ReadArchives(chunk_lines=2)
            | "Normalize" >> NormalizeRecords(config(), "L1", ingested)
            | "Dedupe" >> DropDuplicates()
        )
        per_file = (
            chunks
            | "Key" >> beam.Map(lambda c: (Path(c.uri).name, c.events.num_rows))
            | "Sum" >> beam.CombinePerKey(sum)
        )
        # a.json.gz's retried post sits in another 2-line chunk: it is kept here and
        # removed at commit (which sees the whole batch), so 10 + 5 + 10.
        assert_that(
            per_file,
            equal_to(
                [
                    ("a.json.gz", 25),
                    ("b.json.gz", 10),
                    ("c.json", 2),
                    ("firehose-1.json.gz", 3),
                    ("x.json", 2),
                ]
            ),
        )


def test_cli_json_last_line_and_usage_errors(archive, tmp_path):
    wh = f"duckdb://{tmp_path}/w.duckdb"
    r = run_cli("load", "--archive", archive, "--date", "2026-11-20", "--warehouse", wh, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["records_read"] == (
        doc["events_loaded"]
        + doc["duplicates_in_batch"]
        + doc["already_loaded"]
        + doc["dead_letters"]
        + doc["records_without_event"]
    )
    assert doc["events_loaded"] == 22 and doc["adds_up"] is True
    bad = run_cli("load", "--archive", archive, "--date", "20-11-2026", "--warehouse", wh)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
    missing = run_cli(
        "load", "--archive", tmp_path / "nope", "--date", "2026-11-20", "--warehouse", wh
    )
    assert missing.returncode == 2 and "--archive" in missing.stderr
    nokey = run_cli(
        "load",
        "--archive",
        archive,
        "--date",
        "2026-11-20",
        "--warehouse",
        "bigquery://p/d",
        env={"MAILPULSE_HASH_KEY": ""},
    )
    assert nokey.returncode == 2 and "MAILPULSE_HASH_KEY" in nokey.stderr


def test_bigquery_load_without_staging_names_the_fix(archive):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.load import default_staging
    from pipelines.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="--staging"):
        default_staging(object(), PipelineOptions([]))


def _counts(wh_path):
    w = open_warehouse(f"duckdb://{wh_path}")
    if not w.table_exists("events"):
        return (0, 0, 0)
    q = lambda t: w.query(f"SELECT count(*) AS n FROM {t}").to_pylist()[0]["n"]  # noqa: E731
    return (q("events"), q("dead_letters"), q("loads"))


def write_sendgrid_day(root: Path, hours: int, posts: int) -> int:
    """``hours`` gzip files of ``posts`` SendGrid posts of 100 events each, all distinct;
    returns the number of events."""
    for h in range(hours):
        base = h * posts * 100
        lines = [json.dumps([sg(base + j * 100 + k) for k in range(100)]) for j in range(posts)]
        write_lines(root / "sendgrid" / "2026" / "11" / "20" / f"{h:02d}" / "p.json.gz", lines)
    return hours * posts * 100


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_the_warehouse_as_it_was(tmp_path):
    """kill -9 while loading: the warehouse is either untouched or has the whole load."""
    root = tmp_path / "archive"
    assert write_sendgrid_day(root, 6, 100) == 60_000
    wh_path = tmp_path / "w.duckdb"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "load",
        "--archive",
        str(root),
        "--date",
        "2026-11-20",
        "--warehouse",
        f"duckdb://{wh_path}",
        "--json",
    ]
    seen_partial = False
    for delay in (1.0, 2.0, 3.0, 4.0):
        before = _counts(wh_path)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = _counts(wh_path)
        assert after[0] in (before[0], 60_000), (delay, before, after)
        if after[0] == 60_000:
            assert after[2] >= 1  # a committed load always has its loads row
        else:
            assert after == before
            seen_partial = True
    assert seen_partial, "every kill came too late to test an interrupted load"
    final = run_cli(
        "load",
        "--archive",
        root,
        "--date",
        "2026-11-20",
        "--warehouse",
        f"duckdb://{wh_path}",
        "--json",
    )
    assert final.returncode == 0, final.stderr
    assert _counts(wh_path)[0] == 60_000


def test_large_local_loads_use_every_core_unless_told_otherwise():
    from pipelines.load import PARALLEL_LOCAL_BYTES, local_parallelism

    big = PARALLEL_LOCAL_BYTES
    assert local_parallelism("FnApiRunner", [], big, cpus=2) == [
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
    ]
    assert local_parallelism("FnApiRunner", [], big - 1, cpus=2) == []
    assert local_parallelism("FnApiRunner", [], big, cpus=1) == []
    assert local_parallelism("DataflowRunner", [], big, cpus=8) == []
    assert local_parallelism("FnApiRunner", ["--direct_num_workers=1"], big, cpus=8) == []


def test_staging_left_by_a_killed_load_is_removed_by_a_later_load(archive, tmp_path):
    from pipelines.load import STALE_STAGING_SECONDS

    staging = tmp_path / ".staging"
    old, fresh = staging / "20261120-old", staging / "20261120-running"
    for d in (old, fresh):
        (d / "events").mkdir(parents=True)
        (d / "events" / "x.parquet").write_bytes(b"partial")
    past = time.time() - STALE_STAGING_SECONDS - 60
    os.utime(old, (past, past))
    run_load(str(archive), DAY, f"duckdb://{tmp_path}/w.duckdb", config=config())
    assert not old.exists()  # a killed load's leftovers
    assert fresh.exists()  # may belong to a load still running
    assert [p.name for p in staging.iterdir()] == [fresh.name]  # this load cleaned up too


@pytest.mark.slow
def test_worker_processes_load_without_beams_start_up_warnings(archive, tmp_path):
    """Beam's local workers warn at each start about a Dataflow-only setting; a user sees
    none of it on a load that runs on two worker processes (as large archives do)."""
    wh = f"duckdb://{tmp_path}/w.duckdb"
    r = run_cli(
        "load", "--archive", archive, "--date", "2026-11-20", "--warehouse", wh, "--json",
        "--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["adds_up"] is True
    assert "semi_persistent_directory" not in r.stderr, r.stderr[-2000:]


def test_a_failing_fast_path_costs_speed_not_the_load(archive, tmp_path, monkeypatch, caplog):
    """A bug in the vectorized path (here: it raises on every chunk) must not stop a
    load: each chunk is read by the exact path instead, giving the same warehouse."""
    from pipelines.normalizers import sendgrid_columnar, vectorized

    def stored(wh):
        w = open_warehouse(wh)
        return sorted(
            tuple(r.values())
            for r in w.query(
                "SELECT event_id, event_type, email_hash, event_ts FROM events"
            ).to_pylist()
        )

    good = f"duckdb://{tmp_path}/good.duckdb"
    run_load(str(archive), DAY, good, config=config())

    def broken(*a, **k):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(vectorized, "normalize_chunk", broken)
    monkeypatch.setattr(sendgrid_columnar, "normalize_items", broken)
    wh = f"duckdb://{tmp_path}/w.duckdb"
    with caplog.at_level("WARNING", logger="pipelines.load_transforms"):
        report = run_load(str(archive), DAY, wh, config=config())
    assert report.adds_up and stored(wh) == stored(good) and stored(wh)
    assert "the fast path failed on a chunk" in caplog.text
    assert "TypeError" in caplog.text and "unhashable" not in caplog.text  # type only


def test_the_pipeline_lists_files_largest_first_so_workers_get_even_shares():
    """The local runner deals the reshuffled files to its workers in turn: largest first
    gives each an even share of the bytes (ties by name, so the order is stable)."""
    from datetime import date

    from pipelines.load_transforms import ListArchiveFiles
    from pipelines.sources import ArchiveFile

    files = [
        ArchiveFile(f"/a/{name}", "ses", date(2026, 11, 20), size, "1")
        for name, size in [("b", 10), ("a", 300), ("c", 10), ("d", 7_000)]
    ]
    assert [f.uri for f in ListArchiveFiles(files).files] == ["/a/d", "/a/a", "/a/b", "/a/c"]
