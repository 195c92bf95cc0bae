"""The command line is safe: unknown flags are usage errors naming the closest flag, Beam's
own options still go through, and a --warehouse URI is checked before the hash key.

Everything user-facing runs `mailpulse` as a subprocess, as a user would."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from pipelines.cli import (
    UsageError,
    beam_option_parser,
    build_parser,
    check_beam_args,
    long_flags,
    unknown_arguments,
)
from pipelines.warehouse import WarehouseError, check_warehouse_uri

DAY = "2026-11-20"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """The embedded default warehouse and archive live in a fresh directory."""
    d = tmp_path / "data"
    monkeypatch.setenv("MAILPULSE_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory):
    """A small real archive day written by `mailpulse synth`."""
    out = tmp_path_factory.mktemp("archive")
    res = run_cli("synth", "--out", out, "--date", DAY, "--messages", "200", "--seed", "3")
    assert res.returncode == 0, res.stderr
    return out


def _subcommands():
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices


# -- misspelled flags ---------------------------------------------------------------------
@pytest.mark.parametrize("form", [["--warehose", "X"], ["--warehose=X"]])
def test_misspelled_warehouse_is_a_usage_error_naming_the_flag(
    form, data_dir, tmp_path, sample_archive
):
    res = run_cli("load", "--archive", sample_archive, "--date", DAY, *form, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "--warehose" in res.stderr
    assert "did you mean --warehouse?" in res.stderr
    assert "usage: mailpulse load" in res.stderr
    # Nothing was loaded anywhere: not into the default warehouse, not into "X".
    assert not data_dir.exists()
    assert not (tmp_path / "X").exists()


def test_run_checks_its_flags_too(data_dir, tmp_path):
    res = run_cli("run", "--warehose", "duckdb:///" + str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "did you mean --warehouse?" in res.stderr
    assert not data_dir.exists()  # no sample day generated, nothing loaded


def test_every_unknown_flag_is_named_with_its_closest_flag(data_dir, tmp_path):
    res = run_cli(
        "load",
        "--date",
        DAY,
        "--chunk_lines",
        "5",
        "--temp-location=gs://b/tmp",
        "--archvie",
        "somewhere",
        "--zzqqxx",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    err = res.stderr
    assert "--chunk_lines (did you mean --chunk-lines?)" in err
    assert "--temp-location (did you mean --temp_location (a Beam pipeline option)?)" in err
    assert "--archvie (did you mean --archive?)" in err
    assert "--zzqqxx" in err and "--zzqqxx (did you mean" not in err
    assert "somewhere" not in err.split("error:", 1)[1]  # the value of --archvie, not a stray


def test_a_stray_value_is_named(tmp_path, data_dir):
    res = run_cli("load", "--date", DAY, "leftover", cwd=tmp_path)
    assert res.returncode == 2
    assert "unexpected value 'leftover'" in res.stderr


def test_a_bad_value_for_a_beam_option_is_a_usage_error(tmp_path, data_dir):
    res = run_cli("load", "--date", DAY, "--num_workers=many", cwd=tmp_path)
    assert res.returncode == 2
    assert "--num_workers: invalid int value: 'many'" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("flag", [["--dry_run=True"], ["--dry_run", "False"]])
def test_a_dry_run_is_refused_because_it_would_mark_files_loaded(
    flag, tmp_path, data_dir, sample_archive
):
    """With --dry_run the runner returns DONE without running; the load would then commit
    manifest rows for files it never read. Refused before anything runs."""
    wh = tmp_path / "wh.duckdb"
    res = run_cli(
        "load",
        "--archive",
        sample_archive,
        "--date",
        DAY,
        "--warehouse",
        f"duckdb://{wh}",
        *flag,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert "--dry_run cannot be used" in res.stderr
    assert not wh.exists()


def test_commands_without_beam_options_suggest_too(tmp_path, data_dir):
    res = run_cli("outcomes", "--warehose", "duckdb:///x.duckdb", cwd=tmp_path)
    assert res.returncode == 2
    assert "--warehose (did you mean --warehouse?)" in res.stderr
    res = run_cli("outcomes", "--project", "p", cwd=tmp_path)  # Beam's, but not here
    assert res.returncode == 2
    assert "unrecognized argument: --project" in res.stderr


# -- Beam's options still go through -------------------------------------------------------
def test_valid_beam_flags_in_both_forms_reach_beam(tmp_path, data_dir, sample_archive):
    """`--temp_location=DIR` is read by Beam (GoogleCloudOptions) and decides where the load
    stages its files (DIR/mailpulse-staging); `--direct_num_workers 1` is the space form."""
    wh = tmp_path / "wh.duckdb"
    temp = tmp_path / "beam-temp"
    res = run_cli(
        "load",
        "--archive",
        sample_archive,
        "--date",
        DAY,
        "--warehouse",
        f"duckdb://{wh}",
        "--json",
        f"--temp_location={temp}",
        "--direct_num_workers",
        "1",
        "--direct_running_mode=in_memory",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["events_loaded"] > 0 and report["adds_up"]
    assert report["warehouse"] == f"duckdb://{wh}"
    assert (temp / "mailpulse-staging").is_dir()
    assert "Discarding unparseable args" not in res.stderr


def test_check_beam_args_returns_known_flags_unchanged():
    extra = [
        "--project",
        "my-project",
        "--region=europe-west1",
        "--no_auth",
        "--experiments",
        "a",
        "--experiments=b",
        "--setup_file",
        "./setup.py",
    ]
    assert check_beam_args(list(extra), own=["--warehouse"]) == extra


def test_check_beam_args_rejects_unknown():
    with pytest.raises(UsageError, match=r"--warehose \(did you mean --warehouse\?\)"):
        check_beam_args(["--project", "p", "--warehose", "x"], own=["--archive", "--warehouse"])


def test_unknown_arguments_forms():
    own = ["--archive", "--warehouse"]
    assert unknown_arguments(["--warehose", "X"], own) == ["--warehose (did you mean --warehouse?)"]
    assert unknown_arguments(["--warehose=X"], own) == ["--warehose (did you mean --warehouse?)"]
    assert unknown_arguments(["--warehose=X", "Y"], own) == [
        "--warehose (did you mean --warehouse?)",
        "unexpected value 'Y'",
    ]
    assert unknown_arguments(["--nothing-like-it"], own) == ["--nothing-like-it"]


def test_no_command_flag_shadows_or_abbreviates_a_beam_option():
    """argparse lets `--sta` stand for `--staging`; if a Beam option were a prefix of a
    mailpulse flag (or had the same name), the command would swallow it and Beam would
    never see it. `--runner` is the one flag taken on purpose (and handed to Beam)."""
    beam = set(long_flags(beam_option_parser()))
    for name, sub in _subcommands().items():
        own = set(long_flags(sub))
        assert own & beam <= {"--runner"}, (name, own & beam)
        stolen = sorted((b, o) for b in beam for o in own if o != b and o.startswith(b))
        assert not stolen, (name, stolen)


# -- the warehouse URI is checked first -----------------------------------------------------
COMMANDS = {
    "load": ["load", "--date", DAY],
    "run": ["run", "--date", DAY],
    "outcomes": ["outcomes"],
    "watch": [
        "watch",
        "--category",
        "news",
        "--since",
        "2026-11-20T10:00:00Z",
        "--emails",
        "missing-file.txt",
    ],
    "history": ["history", "--email", "someone@example.com"],
}


WRONG_URIS = {
    "postgres://x": "unknown warehouse scheme 'postgres'",
    "bigquery://my-project": "use bigquery://PROJECT/DATASET",
    "bigquery://my-project/bad-dataset": "is not a BigQuery dataset name",
    "warehouse.duckdb": "not a warehouse URI",
}


# Every command with a BigQuery URI missing its dataset; every kind of wrong URI on `load`
# (the other shapes are covered in process by test_check_warehouse_uri_does_not_connect).
@pytest.mark.parametrize(
    "command,uri",
    [(c, "bigquery://my-project") for c in sorted(COMMANDS)]
    + [("load", u) for u in WRONG_URIS if u != "bigquery://my-project"],
)
def test_a_wrong_uri_is_named_before_the_hash_key(command, uri, tmp_path, data_dir, monkeypatch):
    says = WRONG_URIS[uri]
    monkeypatch.delenv("MAILPULSE_HASH_KEY", raising=False)
    res = run_cli(*COMMANDS[command], "--warehouse", uri, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"mailpulse {command}: error: argument --warehouse: " in res.stderr
    assert says in res.stderr
    assert "bigquery://PROJECT/DATASET" in res.stderr  # names the accepted form
    assert "MAILPULSE_HASH_KEY" not in res.stderr
    assert not data_dir.exists()


def test_a_good_bigquery_uri_without_a_key_asks_for_the_key(
    tmp_path, data_dir, monkeypatch, sample_archive
):
    """The control: with the URI right, the missing key is what `load` reports."""
    monkeypatch.delenv("MAILPULSE_HASH_KEY", raising=False)
    res = run_cli(
        "load",
        "--archive",
        sample_archive,
        "--date",
        DAY,
        "--warehouse",
        "bigquery://my-project/mail",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert "MAILPULSE_HASH_KEY is not set" in res.stderr
    assert "argument --warehouse" not in res.stderr


def test_check_warehouse_uri_does_not_connect(tmp_path):
    path = tmp_path / "sub" / "w.duckdb"
    assert check_warehouse_uri(f"duckdb://{path}") == f"duckdb://{path}"
    assert not path.parent.exists()  # no directory or file made
    assert (
        check_warehouse_uri("bigquery://my-project/mail?location=EU")
        == "bigquery://my-project/mail"
    )
    for bad in (
        "postgres://x",
        "bigquery://my-project",
        "duckdb://",
        "duckdb:///tmp/dir/",
        "",
        "bigquery://my-project/mail?colour=red",
    ):
        with pytest.raises(WarehouseError):
            check_warehouse_uri(bad)


def test_main_in_process_returns_2_with_the_usage_line(capsys, data_dir):
    from pipelines.cli import main

    assert main(["load", "--date", DAY, "--warehose=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mailpulse load")
    assert (
        "mailpulse load: error: unrecognized argument: --warehose (did you mean --warehouse?)"
        in err
    )
    assert main(["history", "--email", "a@example.com", "--warehouse", "bigquery://x"]) == 2
    assert (
        "argument --warehouse: 'bigquery://x': use bigquery://PROJECT/DATASET"
        in capsys.readouterr().err
    )
