"""What a local load's start and end cost: its worker processes, its exit, its imports.

Beam's local runner starts worker processes that run ``pipelines.beam_worker`` (Beam's
harness, then an exit without the interpreter's teardown), ``mailpulse load`` leaves the
same way once its report is out, and building the command line imports neither Flask
nor sqlglot. Each test asserts what a user sees: the same loads, exit statuses and
messages; the speed itself is measured by benchmarks/bench_load.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli
from test_load import DAY, archive  # noqa: F401 (archive: a fixture)

from pipelines.load import WORKER_MODULE, local_runner


def test_the_local_runner_is_used_only_for_worker_processes():
    assert local_runner(["--direct_num_workers", "2"]) is None
    assert local_runner(["--direct_running_mode", "in_memory"]) is None
    args = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing", "--x=1"]
    runner = local_runner(args)
    assert type(runner).__name__ == "FnApiRunner"
    # the flag is taken out: with it, FnApiRunner would start Beam's own worker command
    assert args == ["--direct_num_workers", "2", "--x=1"]
    args = ["--direct_running_mode=multi_processing"]
    assert local_runner(args) is not None and args == []


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
            "load", "--archive", archive, "--date", DAY.isoformat(), "--warehouse", wh,
            "--json", *flags,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert "direct_running_mode should be" not in r.stderr  # Beam's note is dropped
        report = json.loads(r.stdout.strip().splitlines()[-1])
        return {k: v for k, v in report.items() if k in ("per_provider", "adds_up", "files_read")}

    workers = load("w", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    assert workers == load("one", "--direct_num_workers", "1") and workers["adds_up"]


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
