"""What a local load's start and end cost: its worker processes, its exit, its imports.

Beam's local runner starts worker processes that run ``pipelines.beam_worker`` (Beam's
harness, then an exit without the interpreter's teardown), ``mailpulse load`` leaves the
same way once its report is out, and building the command line imports neither Flask
nor sqlglot. Each test asserts what a user sees: the same loads, exit statuses and
messages; the speed itself is measured by benchmarks/bench_load.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from test_load import DAY, archive  # noqa: F401 (archive: a fixture)

from pipelines.load import WORKER_MODULE, local_runner


def test_the_local_runner_is_used_only_for_worker_processes():
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    assert local_runner(PipelineOptions(["--direct_num_workers", "2"])) is None
    assert local_runner(PipelineOptions(["--direct_running_mode", "in_memory"])) is None
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    runner = local_runner(options)
    assert type(runner).__name__ == "FnApiRunner"
    # with multi_processing left in, FnApiRunner would start Beam's own worker command
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert options.view_as(DirectOptions).direct_num_workers == 2


def test_a_worker_that_cannot_start_exits_1_with_its_traceback():
    """Without a runner to talk to (no control address), the harness fails: the worker
    says why and exits 1, as Beam's own worker command does."""
    r = subprocess.run(
        [sys.executable, "-m", WORKER_MODULE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "CONTROL_API_SERVICE_DESCRIPTOR" in r.stderr


@pytest.mark.slow
def test_a_load_on_worker_processes_matches_one_in_process(archive, tmp_path):  # noqa: F811
    def load(name, *flags):
        wh = f"duckdb://{tmp_path}/{name}.duckdb"
        r = run_cli(
            "-v", "load", "--archive", archive, "--date", DAY.isoformat(), "--warehouse", wh,
            "--json", *flags,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert "direct_running_mode should be" not in r.stderr  # Beam's note is dropped
        report = json.loads(r.stdout.strip().splitlines()[-1])
        forked = r.stderr.count("a worker forked from the zygote")
        return forked, {k: report[k] for k in ("per_provider", "adds_up", "files_read")}

    forked, workers = load(
        "w", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"
    )
    assert forked == 2  # both workers were forked ready-made
    assert (0, workers) == load("one", "--direct_num_workers", "1") and workers["adds_up"]


def test_a_worker_command_without_its_zygote_runs_the_harness_itself(tmp_path):
    """The zygote's socket is gone (or never made): the command starts Beam's harness
    as Beam's own command would (here it has no runner either: status 1, the reason)."""
    r = subprocess.run(
        [sys.executable, "-m", WORKER_MODULE, "--zygote", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 1 and "CONTROL_API_SERVICE_DESCRIPTOR" in r.stderr


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if pid.isdigit() and int(pid) != os.getpid() and text.encode() in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.slow
def test_killing_the_driver_leaves_no_zygote_or_worker_behind(tmp_path):
    """kill -9 of ``mailpulse load`` while its forked workers run: the zygote sees its
    pipe close, the workers their runner go, the commands their workers; none stays."""
    from test_load import write_sendgrid_day

    root = tmp_path / "archive"
    write_sendgrid_day(root, 8, 200)
    wh = tmp_path / "w.duckdb"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pipelines", "-v", "load", "--archive", str(root), "--date",
           DAY.isoformat(), "--warehouse", f"duckdb://{wh}", "--json",
           "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]  # fmt: skip
    sockets = set(Path(tempfile.gettempdir()).glob("mailpulse-workers-*"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = b""
        while b"forked from a zygote" not in seen:
            line = proc.stderr.readline()
            assert line, "the load never forked its workers: " + seen[-2000:].decode()
            seen += line
        deadline = time.monotonic() + 60
        while not (tmp_path / ".staging").is_dir() or not any(
            (tmp_path / ".staging").rglob("*.json")
        ):  # the workers are staging chunks
            assert time.monotonic() < deadline and proc.poll() is None, "no chunk was staged"
            time.sleep(0.05)
        assert len(_processes_mentioning(str(wh))) >= 2  # the driver, its zygote, workers
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(wh)) or _processes_mentioning("mailpulse-workers-"):
        assert time.monotonic() < deadline, (
            _processes_mentioning(str(wh)),
            _processes_mentioning("mailpulse-workers-"),
        )
        time.sleep(0.2)
    # the zygote's socket folder went with it
    assert set(Path(tempfile.gettempdir()).glob("mailpulse-workers-*")) <= sockets


def test_mailpulse_load_keeps_its_exit_status_and_messages(tmp_path):
    """``mailpulse load`` leaves without the interpreter's teardown: its status and every
    line it wrote still reach the caller (an empty day: status 4 and the reason)."""
    (tmp_path / "archive" / "sendgrid").mkdir(parents=True)
    r = run_cli(
        "load", "--archive", tmp_path / "archive", "--date", DAY.isoformat(),
        "--warehouse", f"duckdb://{tmp_path}/w.duckdb", "--json",
    )  # fmt: skip
    assert r.returncode == 4, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "empty"
    assert "no archive file" in r.stderr


def test_building_the_command_line_imports_neither_flask_nor_sqlglot(tmp_path):
    """Every command builds every command's flags and checks --warehouse; a load then
    needs neither the collector's Flask nor the query translator."""
    code = (
        "import sys; from pipelines import cli; cli.build_parser(); "
        "from pipelines.warehouse import open_warehouse; "
        f"open_warehouse('duckdb://{tmp_path}/w.duckdb').loaded_files(None, None); "
        "print(sorted(m for m in ('flask', 'sqlglot') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    from pipelines.collector import CollectorConfig, create_app  # still there when used

    assert callable(create_app) and CollectorConfig.__name__ == "CollectorConfig"


def test_the_normalize_steps_declared_output_type_is_the_one_beam_infers():
    """Declared so the driver skips Beam's bytecode inference (0.24 s of its start): it
    must stay what that inference finds, or Beam would pick another coder."""
    from datetime import datetime, timezone

    from apache_beam.typehints import Any

    from pipelines.hashing import EmailHasher
    from pipelines.load_transforms import NormalizeChunkFn, NormalizedChunk
    from pipelines.normalizers.base import NormalizeSettings

    fn = NormalizeChunkFn(
        NormalizeSettings(hasher=EmailHasher("k")), "x", datetime.now(timezone.utc)
    )
    declared = fn.get_type_hints().simple_output_type("NormalizeChunks")
    assert declared is NormalizedChunk
    assert fn.infer_output_type(Any) is NormalizedChunk  # Beam's inference from the bytecode


def test_local_staging_files_hold_every_value_and_the_date_range(tmp_path):
    """Local staging is written uncompressed with statistics only for event_date (the
    only ones the commit uses): every value must still come back, events and dead
    letters alike, and the date range must be in the file's metadata."""
    from datetime import date, datetime, timezone

    import pyarrow.parquet as pq

    from pipelines.events import dead_letters_to_arrow, events_to_arrow
    from pipelines.load_transforms import _write_parquet

    ts = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    ev = {
        "event_id": "e1", "provider": "sendgrid", "event_type": "delivered",
        "event_ts": ts, "event_date": date(2026, 11, 20), "message_id": "m1",
        "email_hash": "h" * 64, "recipient_domain": "example.com",
        "categories": ["news", "日本"], "source_uri": "/a/b.json.gz", "ingested_at": ts,
    }  # fmt: skip
    events = events_to_arrow([ev, dict(ev, event_id="e2", event_date=date(2026, 11, 19))])
    _write_parquet(events, str(tmp_path / "e.parquet"))
    assert pq.read_table(tmp_path / "e.parquet").equals(events)
    meta = pq.ParquetFile(tmp_path / "e.parquet").metadata.row_group(0)
    col = next(
        meta.column(i)
        for i in range(meta.num_columns)
        if meta.column(i).path_in_schema == "event_date"
    )
    assert (col.statistics.min, col.statistics.max) == (date(2026, 11, 19), date(2026, 11, 20))
    dead = dead_letters_to_arrow(
        [{"source_uri": "/a/b.json.gz", "line": 3, "record_index": 0, "reason": "bad JSON",
          "raw": "{", "provider": "sendgrid", "event_date": date(2026, 11, 20),
          "ingested_at": ts, "load_id": "x"}]
    )  # fmt: skip
    _write_parquet(dead, str(tmp_path / "d.parquet"))
    assert pq.read_table(tmp_path / "d.parquet").equals(dead)


def test_a_zygote_that_cannot_make_its_socket_leaves_the_workers_to_start_themselves(
    tmp_path,
):
    """A temporary folder too long for a Unix socket's name: no zygote and no error (each
    worker command then runs Beam's harness itself); and with a usable one, a zygote
    that ends when closed. In a fresh process: the driver of a load has no other
    thread (a test runner's threads would keep the zygote from starting)."""
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    code = (
        "import os, sys; from pipelines.beam_worker import Zygote; z = Zygote(); "
        "ok = z.start(); pid = z.pid; z.close(); "
        "gone = pid is None or not os.path.exists(f'/proc/{pid}'); "
        "print(ok, gone, os.path.exists(os.path.dirname(z.path)))"
    )

    def run(tmpdir):
        env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT))
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert run(deep) == ["False", "True", "False"]
    short = tempfile.mkdtemp(prefix="mp-", dir="/tmp")  # tmp_path is too long for a socket
    try:
        assert run(short) == ["True", "True", "False"]  # started, ended, cleaned up
    finally:
        os.rmdir(short)
