"""Dataflow, checked: the README's documented `mailpulse load --runner DataflowRunner ...`
command builds a real Dataflow job (graph + staged package) with `--dry_run=True
--no_auth`, without any network.

The command is taken from the README, split into mailpulse's flags and Beam's by the CLI's
own parser and checked by the CLI's own flag check; the job is then built the way
``run_load`` builds it (``PipelineOptions(beam_args, runner=...)`` and ``build_pipeline``)
and run by the real ``DataflowRunner``, which stops before submitting. It goes through
``build_pipeline`` rather than a ``mailpulse load`` subprocess because the load, around the
job, lists the archive, reads the ``loaded_files`` manifest, cleans the staging area on
gs:// and commits to BigQuery, and those need the network; the file list the driver would
have found is given here instead (two hourly files per provider of the README's archive).
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.runner import PipelineState
from conftest import ROOT, TEST_HASH_KEY

from pipelines import __version__
from pipelines.cli import build_parser, check_command_line
from pipelines.hashing import EmailHasher
from pipelines.load import NormalizeSettings, build_pipeline, default_staging, resolve_runner
from pipelines.sources import ArchiveFile, archive_sources
from pipelines.warehouse import open_warehouse

#: The load graph's top-level steps, in order (DESIGN.md house style: one label each).
LOAD_STEPS = [
    "ListArchiveFiles",
    "ReadArchives",
    "NormalizeRecords",
    "DropDuplicates",
    "WriteStaging",
]


def readme_dataflow_command() -> list[str]:
    """The first ```bash block after the README's **Dataflow.** paragraph, as argv."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    at = text.index("**Dataflow.**")
    block = re.search(r"```bash\n(.*?)```", text[at:], re.S)
    assert block, "the README's Dataflow paragraph has no ```bash command"
    argv = shlex.split(block.group(1).replace("\\\n", " "))
    assert argv[:2] == ["mailpulse", "load"], argv
    return argv[1:]


@pytest.fixture
def project_copy(tmp_path, monkeypatch):
    """The package sources in a scratch directory, made the working directory, so
    `--setup_file ./setup.py` builds from there and nothing is written into the repo;
    Beam's own temporary folders go under tmp_path too."""
    src = tmp_path / "project"
    src.mkdir()
    shutil.copy(ROOT / "setup.py", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(
        ROOT / "pipelines", src / "pipelines", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(src)
    return src


def test_readme_dataflow_command_builds_a_dataflow_job(project_copy, caplog):
    egg_info_in_repo = (ROOT / "mailpulse.egg-info").exists()
    argv = readme_dataflow_command()
    args, extra = build_parser().parse_known_args(argv)
    check_command_line(args, extra)  # exits 2 if the README documented a wrong flag
    assert resolve_runner(args.runner) == "DataflowRunner"

    # What run_load does with the command's Beam flags, plus the dry run.
    options = PipelineOptions(
        extra + ["--dry_run=True", "--no_auth"], runner=resolve_runner(args.runner)
    )
    options.view_as(SetupOptions).save_main_session = False
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == (
        "my-project",
        "europe-west1",
        "gs://my-bucket/tmp",
    )
    assert options.view_as(SetupOptions).setup_file == "./setup.py"

    wh = open_warehouse(args.warehouse)
    staging = default_staging(wh, options)
    assert staging == "gs://my-bucket/tmp/mailpulse-staging"
    started = datetime(2026, 11, 21, 3, 0, tzinfo=timezone.utc)
    load_id = f"{args.date:%Y%m%d}-030000-dryrun00"
    files = [
        ArchiveFile(
            f"{src.root}/{args.date:%Y/%m/%d}/{hour:02d}/events-{n}.json.gz",
            src.provider,
            args.date,
            1000 + n,
            "1763650000",
        )
        for src in archive_sources(args.archive)
        for n, hour in enumerate((9, 17))
    ]
    assert {f.uri.split("/")[4] for f in files} == {"sendgrid", "ses", "cmc"}
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        files=files,
        staging=f"{staging}/{load_id}",
        config=NormalizeSettings(hasher=EmailHasher(TEST_HASH_KEY)),
        load_id=load_id,
        ingested_at=started,
    )

    caplog.set_level(logging.INFO, logger="apache_beam.runners.portability.stager")
    result = pipeline.run()
    assert result.state == PipelineState.DONE  # the dry run stops before submitting
    job = result.job

    # The job: a batch Dataflow job whose graph is the load graph, step by step.
    assert job.proto.type.name == "JOB_TYPE_BATCH"
    assert job.proto.name.startswith("beamapp-")
    assert not job.options.view_as(StandardOptions).streaming
    comps = job.proto_pipeline.components
    (root_id,) = job.proto_pipeline.root_transform_ids
    top = [comps.transforms[t].unique_name for t in comps.transforms[root_id].subtransforms]
    assert top == LOAD_STEPS

    # Each step does its work in ParDos (DoFns) the Dataflow workers run.
    def pardos(tid):
        t = comps.transforms[tid]
        own = [t.unique_name] if t.spec.urn == "beam:transform:pardo:v1" else []
        return own + [n for sub in t.subtransforms for n in pardos(sub)]

    for tid in comps.transforms[root_id].subtransforms:
        assert pardos(tid), comps.transforms[tid].unique_name
    assert job.options.view_as(GoogleCloudOptions).staging_location.startswith(
        "gs://my-bucket/tmp/"
    )

    # The staged package: the environment ships this package's sdist as workflow.tar.gz.
    staged = {}
    for env in comps.environments.values():
        for dep in env.dependencies:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                dep.role_payload
            ).staged_name
            staged[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
    assert "workflow.tar.gz" in staged, staged
    sdist = Path(staged["workflow.tar.gz"])
    assert sdist.name == f"mailpulse-{__version__}.tar.gz" and sdist.is_file()
    assert str(sdist).startswith(tempfile.tempdir)
    with tarfile.open(sdist) as tar:
        members = set(tar.getnames())
        for path in (
            "setup.py",
            "pipelines/__init__.py",
            "pipelines/load.py",
            "pipelines/normalizers/ses.py",
            "pipelines/warehouse/bigquery.py",
        ):
            assert f"mailpulse-{__version__}/{path}" in members, path
        requires = tar.extractfile(
            f"mailpulse-{__version__}/mailpulse.egg-info/requires.txt"
        ).read()
    requires = requires.decode().split("\n\n[", 1)[0].split()
    assert any(r.startswith("apache-beam[") and r.endswith("==2.77.0") for r in requires), requires
    assert "duckdb==2.0.0" in requires

    # Built with `python -m build` (a core dependency), not the legacy `setup.py sdist`.
    commands = [r.getMessage() for r in caplog.records if "Executing command" in r.getMessage()]
    assert any("'-m', 'build'" in c and "--sdist" in c for c in commands), commands
    assert not any("--dist-dir" in c for c in commands), commands
    # The build ran in the copy (its egg-info is there), not in the repository.
    assert (project_copy / "mailpulse.egg-info").is_dir()
    assert (ROOT / "mailpulse.egg-info").exists() == egg_info_in_repo
