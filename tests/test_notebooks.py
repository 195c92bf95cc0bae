"""The analyst notebooks (notebooks/*.ipynb), executed top to bottom with nbclient.

A synthetic warehouse is built once for the module the way production builds it:
``pipelines.synth`` archives for every provider over several days, the Beam load job
(``run_load``) per day, then ``compute_outcomes`` over the range. Each notebook runs in
a real IPython kernel started from the interpreter running the tests (a kernel spec
written to a tmp dir that points at ``sys.executable``), reading the warehouse from
``MAILPULSE_WAREHOUSE`` as an analyst's would. Every cell must run and every plot must
render as an image/png output.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, TEST_HASH_KEY

NOTEBOOKS = ROOT / "notebooks"
NAMES = ("delivery_health.ipynb", "bounce_analysis.ipynb", "campaign_postmortem.ipynb")
FIRST_DAY = date(2026, 11, 17)
DAYS = 4
KERNEL = "mailpulse-test-python"


@pytest.fixture(scope="module")
def synthetic_warehouse(tmp_path_factory):
    from pipelines.hashing import EmailHasher
    from pipelines.load import NormalizeConfig, run_load
    from pipelines.outcomes import compute_outcomes
    from pipelines.synth import generate

    base = tmp_path_factory.mktemp("nb-warehouse")
    archive, uri = base / "archive", f"duckdb://{base / 'warehouse.duckdb'}"
    days = [FIRST_DAY + timedelta(days=i) for i in range(DAYS)]
    for d in days:
        generate(archive, d, messages=400, seed=d.day, categories=5)
    config = NormalizeConfig(hasher=EmailHasher(TEST_HASH_KEY))
    # late events of the last day land in the next day's directories
    for d in [*days, days[-1] + timedelta(days=1)]:
        assert run_load(str(archive), d, uri, config=config).adds_up()
    written = compute_outcomes(uri, days[0], days[-1] + timedelta(days=1))
    assert written["delivery_outcomes"] > 0 and written["suppressions"] > 0
    return uri


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A Jupyter data dir with one kernel spec: this interpreter, the repo importable."""
    d = tmp_path_factory.mktemp("jupyter")
    spec = d / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mailpulse test (sys.executable)", "language": "python",
        "env": {"PYTHONPATH": str(ROOT)},
    }))
    return d


def execute(name: str, warehouse: str, kernel_dir: Path, monkeypatch, tmp_path,
            parameters: dict | None = None) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MAILPULSE_WAREHOUSE", warehouse)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the embedded default must not be what is read
    monkeypatch.setenv("MAILPULSE_DATA_DIR", str(tmp_path / "not-the-warehouse"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if parameters:  # papermill-style: a cell after the parameters cell overrides them
        idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(
            "\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def outputs(nb, output_type=None):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if output_type is None or o.output_type == output_type]


def pngs(nb) -> int:
    return sum(1 for o in outputs(nb) if "image/png" in o.get("data", {}))


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("name,plots", [("delivery_health.ipynb", 2),
                                        ("bounce_analysis.ipynb", 1),
                                        ("campaign_postmortem.ipynb", 1)])
def test_notebook_runs_top_to_bottom_and_renders_plots(name, plots, synthetic_warehouse,
                                                      kernel_dir, monkeypatch, tmp_path):
    nb = execute(name, synthetic_warehouse, kernel_dir, monkeypatch, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell did not run"
    assert not outputs(nb, "error")
    assert pngs(nb) == plots
    text = text_of(nb)
    assert synthetic_warehouse in text  # it read the configured warehouse
    assert "not-the-warehouse" not in text


@pytest.mark.slow
def test_postmortem_follows_the_parameters(synthetic_warehouse, kernel_dir, monkeypatch,
                                           tmp_path):
    nb = execute("campaign_postmortem.ipynb", synthetic_warehouse, kernel_dir, monkeypatch,
                 tmp_path, parameters={"CATEGORY": "reengagement",
                                       "SEND_START": "2026-11-18T00:00:00Z",
                                       "SEND_END": "2026-11-18T23:59:59Z"})
    assert not outputs(nb, "error")
    assert "category 'reengagement', sent 2026-11-18 00:00 .. 2026-11-18 23:59 UTC" in text_of(nb)
    assert pngs(nb) == 1


def test_committed_notebooks_are_the_builder_output_with_outputs_cleared():
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(NOTEBOOKS))
    assert sorted(build_notebooks.NOTEBOOKS) == sorted(NAMES)
    for name in NAMES:
        committed = (NOTEBOOKS / name).read_text(encoding="utf-8")
        assert committed == build_notebooks.render(name), (
            f"{name} differs from notebooks/build_notebooks.py: run "
            "`python notebooks/build_notebooks.py` and commit the result")
        nb = nbformat.reads(committed, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code)
        assert "parameters" in code[0].metadata.get("tags", [])
        assert "WAREHOUSE = None" in code[0].source
        # cells call the package; the SQL and arithmetic live in pipelines.analysis
        body = "\n".join(c.source for c in code)
        assert "SELECT" not in body.upper().replace("SELECTED", "")
        assert "from pipelines import analysis" in body
