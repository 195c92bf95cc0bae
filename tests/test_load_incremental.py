"""Incremental loads: the loaded_files manifest, loads without a date, ``load --follow``.

A refresh reads only what is new; a file that grows or is rewritten is read again; two
loads at once or a load killed inside its commit never store a file's events twice or
lose them; ``--follow`` finishes its batch on SIGTERM and waits out a reader that holds
the DuckDB file, naming it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT, TEST_HASH_KEY, run_cli
from test_load import sg, write_lines

from pipelines.hashing import EmailHasher
from pipelines.load import NormalizeSettings, load_days, run_load
from pipelines.warehouse import open_warehouse

DAY = date(2026, 11, 20)
T0 = int(datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp())


def config():
    return NormalizeSettings(hasher=EmailHasher(TEST_HASH_KEY))


def sg_file(root: Path, day: date, hour: int, name: str, ids: range) -> Path:
    """A SendGrid archive file of one POST per 10 events, events ``ids`` of ``day``."""
    ts0 = int(datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc).timestamp())
    posts = [
        json.dumps([sg(i, ts=ts0 + (i % 3000)) for i in ids[k : k + 10]])
        for k in range(0, len(ids), 10)
    ]
    path = root / "sendgrid" / f"{day:%Y/%m/%d}" / f"{hour:02d}" / name
    write_lines(path, posts)
    return path


def count(wh: str, sql: str) -> int:
    return open_warehouse(wh).query(sql).to_pylist()[0]["n"]


def events(wh: str) -> int:
    return count(
        wh,
        "SELECT count(*) AS n FROM events WHERE event_date BETWEEN '2026-01-01' AND '2027-12-31'",
    )


def test_a_refresh_reads_only_new_files(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    for h in range(5):
        sg_file(root, DAY, h, f"f{h}.json.gz", range(h * 100, h * 100 + 100))
    first = run_load(str(root), DAY, wh, config=config())
    assert (first.files_read, first.totals["events_loaded"]) == (5, 500)
    sg_file(root, DAY, 9, "new.json.gz", range(900, 950))
    second = run_load(str(root), DAY, wh, config=config())
    assert (second.files_read, second.files_skipped) == (1, 5)
    assert second.totals == {**second.totals, "records_read": 50, "events_loaded": 50}
    third = run_load(str(root), DAY, wh, config=config())
    assert (third.files_read, third.files_skipped, third.status) == (0, 6, "up_to_date")
    assert events(wh) == 550
    rows = (
        open_warehouse(wh)
        .query("SELECT source_uri, records, events, size FROM loaded_files ORDER BY 1")
        .to_pylist()
    )
    assert len(rows) == 6 and sum(r["records"] for r in rows) == 550
    assert all(r["size"] == os.path.getsize(r["source_uri"]) for r in rows)


def test_a_file_that_grows_or_is_rewritten_is_read_again(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    path = root / "sendgrid" / "2026/11/20/10" / "grow.json"
    write_lines(path, [json.dumps([sg(i) for i in range(10)])], gz=False)
    assert run_load(str(root), DAY, wh, config=config()).totals["events_loaded"] == 10
    with open(path, "a") as fh:  # an appender (not mailpulse's collector) adds a post
        fh.write(json.dumps([sg(i) for i in range(10, 15)]) + "\n")
    grown = run_load(str(root), DAY, wh, config=config())
    assert grown.files_read == 1
    assert (grown.totals["events_loaded"], grown.totals["already_loaded"]) == (5, 10)
    # rewritten in place with the same size: a new generation (mtime) is read again
    data = path.read_bytes()
    path.write_bytes(
        data.replace(b'"delivered"', b'"processed"', 1).replace(
            b'sg-delivered-0"', b'sg-processed-0"', 1
        )
    )
    st = os.stat(path)
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    again = run_load(str(root), DAY, wh, config=config())
    assert again.files_read == 1 and again.totals["events_loaded"] == 1
    assert count(wh, "SELECT count(*) AS n FROM loaded_files") == 1
    assert events(wh) == 16


def test_load_without_a_date_reads_the_last_days(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    today = date(2026, 11, 24)
    for back in range(6):  # 2026-11-19 .. 2026-11-24
        sg_file(
            root, today - timedelta(days=back), 12, "x.json.gz", range(back * 100, back * 100 + 10)
        )
    assert load_days(None, 4, today) == [today - timedelta(days=i) for i in (3, 2, 1, 0)]
    r = run_load(str(root), None, wh, config=config(), days=4, today=today)
    assert (r.files_read, r.first_date, r.archive_date) == (4, date(2026, 11, 21), today)
    assert events(wh) == 40
    r = run_load(str(root), None, wh, config=config(), days=6, today=today)
    assert (r.files_read, r.files_skipped) == (2, 4)


def test_cli_without_a_date_and_empty_window_exit_codes(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    today = datetime.now(timezone.utc).date()
    sg_file(root, today, 0, "today.json.gz", range(20))
    r = run_cli("load", "--archive", root, "--warehouse", wh, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert (doc["files_read"], doc["events_loaded"], doc["status"]) == (1, 20, "succeeded")
    assert doc["first_date"] == (today - timedelta(days=3)).isoformat()
    # nothing new: files already loaded count as found (exit 0)
    r = run_cli("load", "--archive", root, "--warehouse", wh, "--json")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and (doc["files_skipped"], doc["status"]) == (1, "up_to_date")
    # a window with no file at all: exit 4, 0 with --allow-empty
    r = run_cli("load", "--archive", root, "--warehouse", wh, "--date", "2020-01-01")
    assert r.returncode == 4 and "no archive files for 2020-01-01" in r.stderr
    r = run_cli(
        "load", "--archive", root, "--warehouse", wh, "--date", "2020-01-01", "--allow-empty"
    )
    assert r.returncode == 0


def test_symlinks_leaving_the_archive_are_skipped_and_counted(tmp_path, caplog):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    sg_file(root, DAY, 10, "real.json.gz", range(10))
    secret = tmp_path / "outside.json"
    secret.write_text(json.dumps([sg(99)]) + "\n")
    hour = root / "sendgrid" / "2026/11/20/10"
    (hour / "evil.json").symlink_to(secret)
    (hour / "inside.json.gz").symlink_to(hour / "real.json.gz")  # stays inside: read
    from pipelines.sources import archive_sources, list_days

    listing = list_days(archive_sources(str(root)), [DAY])
    assert listing.skipped == {"symlink outside the archive": 1}
    assert sorted(Path(f.uri).name for f in listing.files) == ["inside.json.gz", "real.json.gz"]
    assert any("outside the archive" in r.message for r in caplog.records)
    r = run_load(str(root), DAY, wh, config=config())
    assert r.totals["events_loaded"] == 10
    assert count(wh, "SELECT count(*) AS n FROM dead_letters") == 0


def test_two_loads_at_once_store_each_file_once(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    for h in range(8):
        sg_file(root, DAY, h, f"f{h}.json.gz", range(h * 500, h * 500 + 500))
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_HASH_KEY=TEST_HASH_KEY)
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "load",
        "--archive",
        str(root),
        "--date",
        DAY.isoformat(),
        "--warehouse",
        wh,
        "--json",
    ]
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    docs = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sum(d["events_loaded"] for d in docs) == 4000
    assert all(d["adds_up"] for d in docs)
    assert events(wh) == 4000
    assert count(wh, "SELECT count(DISTINCT source_uri) AS n FROM loaded_files") == 8
    assert count(wh, "SELECT count(*) AS n FROM loaded_files") == 8


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_kill_9_inside_the_commit_leaves_the_warehouse_as_it_was(tmp_path, delay):
    """Kill the load while it commits (the DuckDB file is open for writing, at several
    moments after that starts): afterwards the manifest and the events agree (all of the
    batch or none), and a rerun completes it."""
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    for h in range(12):
        sg_file(root, DAY, h, f"f{h}.json.gz", range(h * 4000, h * 4000 + 4000))
    db = tmp_path / "w.duckdb"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_HASH_KEY=TEST_HASH_KEY)
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "load",
        "--archive",
        str(root),
        "--date",
        DAY.isoformat(),
        "--warehouse",
        wh,
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # the commit starts when staging is complete and the load opens the file for writing
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and (tmp_path / "w.duckdb.wal").exists():
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    # (killed while the tables were being created, some may not exist yet: no data)
    w = open_warehouse(wh)
    n_events = events(wh) if w.table_exists("events") else 0
    n_files = (
        count(wh, "SELECT count(*) AS n FROM loaded_files") if w.table_exists("loaded_files") else 0
    )
    assert (n_events, n_files) in {(0, 0), (48000, 12)}, (n_events, n_files)
    r = run_load(str(root), DAY, wh, config=config())
    assert r.files_read == 12 - n_files
    assert events(wh) == 48000
    assert count(wh, "SELECT count(*) AS n FROM loaded_files") == 12


def test_an_older_warehouse_file_gains_the_new_tables_and_columns(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    sg_file(root, DAY, 10, "x.json.gz", range(10))
    run_load(str(root), DAY, wh, config=config())
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("DROP TABLE loaded_files")
    con.execute("ALTER TABLE loads DROP COLUMN files_skipped")
    con.close()
    sg_file(root, DAY, 11, "y.json.gz", range(10, 20))
    r = run_load(str(root), DAY, wh, config=config())
    assert r.files_read == 2 and r.totals["events_loaded"] == 10  # x re-read, deduped
    assert count(wh, "SELECT count(*) AS n FROM loads WHERE files_skipped IS NULL") == 1


# -- load --follow ---------------------------------------------------------------------


class Follower:
    """A real ``mailpulse load --follow`` process; its stdout lines are collected."""

    def __init__(self, root: Path, wh: str, *args: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT), MAILPULSE_HASH_KEY=TEST_HASH_KEY)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "pipelines",
                "load",
                "--follow",
                "--archive",
                str(root),
                "--warehouse",
                wh,
                "--days",
                "2",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        import threading

        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pred, timeout=120.0) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if pred(line):
                    return line
            seen = len(self.lines)
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.1)
        raise AssertionError(f"no matching line; got: {self.lines[-20:]}")

    def stop(self, sig=signal.SIGTERM, timeout=120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._t.join(timeout=5)
        return rc


@pytest.mark.slow
def test_follow_loads_new_files_and_finishes_its_batch_on_sigterm(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    today = datetime.now(timezone.utc).date()
    sg_file(root, today, 0, "a.json.gz", range(100))
    f = Follower(root, wh, "--interval", "1")
    try:
        f.wait_for(lambda s: "1 files, 100 new events" in s)
        f.wait_for(lambda s: "nothing new (1 files already loaded)" in s)
        # a reader holds the file (a notebook kernel, say): the follower waits, names it
        reader = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
        sg_file(root, today, 1, "b.json.gz", range(100, 150))
        line = f.wait_for(lambda s: "waiting" in s and str(os.getpid()) in s)
        assert "close that connection" in line
        reader.close()
        f.wait_for(lambda s: "1 files, 50 new events" in s)
        # SIGTERM while a big batch runs: the batch completes, then exit 0
        sg_file(root, today, 2, "c.json.gz", range(1000, 31000))
        time.sleep(1.5)
        rc = f.stop()
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
    assert rc == 0, f.lines[-10:]
    assert any("stopped after" in s for s in f.lines)
    assert events(wh) in (150, 30150)  # the c batch had started, or not yet: never half
    r = run_load(str(root), None, wh, config=config(), days=2)
    assert events(wh) == 30150 and r.files_read in (0, 1)


@pytest.mark.slow
def test_follow_after_kill_9_picks_up_where_it_was(tmp_path):
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    today = datetime.now(timezone.utc).date()
    for h in range(3):
        sg_file(root, today, h, f"{h}.json.gz", range(h * 10000, h * 10000 + 10000))
    f = Follower(root, wh, "--interval", "1")
    time.sleep(4)
    f.stop(signal.SIGKILL)
    g = Follower(root, wh, "--interval", "1")
    try:
        g.wait_for(lambda s: "nothing new (3 files already loaded)" in s, timeout=180)
    finally:
        assert g.stop() == 0
    assert events(wh) == 30000
    assert count(wh, "SELECT count(*) AS n FROM loaded_files") == 3


def test_progress_line_shows_while_the_load_runs(tmp_path, capsys):
    import re

    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    for h in range(24):
        sg_file(root, DAY, h, f"f{h}.json.gz", range(h * 2000, h * 2000 + 2000))
    t0 = time.monotonic()
    run_load(str(root), DAY, wh, config=config(), progress=True, chunk_lines=20)
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    ticks = [
        m
        for m in re.finditer(
            r"loading: (\d+)/24 files, ([\d,]+) events staged, "
            r"([\d,]+) events/s",
            err,
        )
    ]
    assert ticks and ticks[-1].group(1) == "24"
    assert int(ticks[-1].group(2).replace(",", "")) == 48000
    # the rate is of the load's own time, not of an instant after it finished (the
    # line used to appear once, after the work, at 110 million events/s)
    assert int(ticks[-1].group(3).replace(",", "")) <= 3 * 48000 / elapsed
    if elapsed > 3:
        assert len(ticks) >= 2  # it updated while running


def test_a_load_facing_a_held_file_fails_naming_the_holder(tmp_path):
    """Without --follow, a DuckDB file held past the lock retries is a clear error (exit
    2, who holds it, nothing committed), not a traceback."""
    root, wh = tmp_path / "a", f"duckdb://{tmp_path}/w.duckdb"
    sg_file(root, DAY, 10, "x.json.gz", range(10))
    run_load(str(root), DAY, wh, config=config())
    sg_file(root, DAY, 11, "y.json.gz", range(10, 20))
    holder = duckdb.connect(str(tmp_path / "w.duckdb"))  # a writer: blocks every other process
    try:
        r = run_cli(
            "load", "--archive", root, "--date", DAY.isoformat(), "--warehouse", wh, timeout=300
        )
    finally:
        holder.close()
    assert r.returncode == 2, r.stderr[-2000:]
    assert str(os.getpid()) in r.stderr and "Traceback" not in r.stderr
    assert "rerun the load" in r.stderr
    assert events(wh) == 10
