"""The analyst notebooks (notebooks/*.ipynb), executed top to bottom with nbclient.

A synthetic warehouse is built once for the module the way production builds it:
``pipelines.synth`` archives for every provider over several days, the Beam load job
(``run_load``) per day, then ``compute_outcomes`` over the range. Each notebook runs in
a real IPython kernel started from the interpreter running the tests (a kernel spec
written to a tmp dir that points at ``sys.executable``), reading the warehouse from
``MAILPULSE_WAREHOUSE`` as an analyst's would. Every cell must run and every plot must
render as an image/png output. The frames the notebooks show are read back from the
kernel (a probe cell appended after the last cell prints them as JSON) and checked
against SQL over the same warehouse.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime, timedelta, timezone
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
    from pipelines.load import NormalizeSettings, run_load
    from pipelines.outcomes import compute_outcomes
    from pipelines.synth import generate

    base = tmp_path_factory.mktemp("nb-warehouse")
    archive, uri = base / "archive", f"duckdb://{base / 'warehouse.duckdb'}"
    days = [FIRST_DAY + timedelta(days=i) for i in range(DAYS)]
    for d in days:
        generate(archive, d, messages=400, seed=d.day, categories=5)
    config = NormalizeSettings(hasher=EmailHasher(TEST_HASH_KEY))
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
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mailpulse test (sys.executable)",
                "language": "python",
                "env": {"PYTHONPATH": str(ROOT)},
            }
        )
    )
    return d


def execute(
    name: str,
    warehouse: str,
    kernel_dir: Path,
    monkeypatch,
    tmp_path,
    parameters: dict | None = None,
    probe: str | None = None,
) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MAILPULSE_WAREHOUSE", warehouse)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the embedded default must not be what is read
    monkeypatch.setenv("MAILPULSE_DATA_DIR", str(tmp_path / "not-the-warehouse"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if parameters:  # papermill-style: a cell after the parameters cell overrides them
        idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(
            idx + 1,
            nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())),
        )
    if probe:  # read the notebook's own variables back: one JSON line on stdout
        nb.cells.append(
            nbformat.v4.new_code_cell(
                f"import json as _json\nprint('PROBE' + _json.dumps({probe}, default=str))"
            )
        )
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return nb


def outputs(nb, output_type=None):
    return [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if output_type is None or o.output_type == output_type
    ]


def pngs(nb) -> int:
    return sum(1 for o in outputs(nb) if "image/png" in o.get("data", {}))


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,plots",
    [("delivery_health.ipynb", 3), ("bounce_analysis.ipynb", 1), ("campaign_postmortem.ipynb", 1)],
)
def test_notebook_runs_top_to_bottom_and_renders_plots(
    name, plots, synthetic_warehouse, kernel_dir, monkeypatch, tmp_path
):
    nb = execute(name, synthetic_warehouse, kernel_dir, monkeypatch, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell did not run"
    assert not outputs(nb, "error")
    assert pngs(nb) == plots
    text = text_of(nb)
    assert synthetic_warehouse in text  # it read the configured warehouse
    assert "not-the-warehouse" not in text


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
            "`python notebooks/build_notebooks.py` and commit the result"
        )
        nb = nbformat.reads(committed, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code)
        assert "parameters" in code[0].metadata.get("tags", [])
        assert "WAREHOUSE = None" in code[0].source
        # cells call the package; the SQL and arithmetic live in pipelines.analysis
        body = "\n".join(c.source for c in code)
        assert "SELECT" not in body.upper().replace("SELECTED", "")
        assert "from pipelines import analysis, frames" in body


# -- the views, checked against SQL over the same warehouse ---------------------------------


def probed(nb) -> dict:
    lines = [
        line
        for o in outputs(nb, "stream")
        for line in o.get("text", "").splitlines()
        if line.startswith("PROBE")
    ]
    assert len(lines) == 1, "the probe cell printed nothing"
    return json.loads(lines[0][len("PROBE") :])


def sql(warehouse: str, query: str, params: list | None = None) -> list[tuple]:
    import duckdb

    con = duckdb.connect(warehouse[len("duckdb://") :], read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


LAST_SEND_DAY = FIRST_DAY + timedelta(days=DAYS - 1)


def test_fixture_has_a_trailing_day_of_late_reports_only(synthetic_warehouse):
    """What the tail tests below guard against: the day after the last send holds late
    bounces and deliveries but no requests."""
    rows = dict(
        sql(
            synthetic_warehouse,
            "SELECT event_date, SUM(requests) FROM delivery_outcomes GROUP BY 1",
        )
    )
    late = LAST_SEND_DAY + timedelta(days=1)
    assert rows[late] == 0 and rows[LAST_SEND_DAY] > 0
    assert (
        sql(
            synthetic_warehouse,
            "SELECT SUM(bounces + delivered) FROM delivery_outcomes WHERE event_date = ?",
            [late],
        )[0][0]
        > 0
    )


@pytest.mark.slow
@pytest.mark.parametrize("end", [None, (LAST_SEND_DAY + timedelta(days=1)).isoformat()])
def test_delivery_health_by_mailbox_provider_without_an_empty_tail(
    end, synthetic_warehouse, kernel_dir, monkeypatch, tmp_path
):
    nb = execute(
        "delivery_health.ipynb",
        synthetic_warehouse,
        kernel_dir,
        monkeypatch,
        tmp_path,
        parameters={"END": end} if end else None,
        probe="{'daily': daily.to_dict('records'), 'mailbox': mailbox.to_dict('records'),"
        " 'funnels': funnels.to_dict('records'),"
        " 'summary': frames.mailbox_summary(mailbox).to_dict('records')}",
    )
    assert not outputs(nb, "error")
    got = probed(nb)
    days = sorted({r["event_date"][:10] for r in got["daily"]})
    mailbox_days = sorted({r["event_date"][:10] for r in got["mailbox"]})
    # the plotted days end on the last day mail was sent, even when END asks for one more
    assert days[-1] == mailbox_days[-1] == LAST_SEND_DAY.isoformat()
    assert days[0] == FIRST_DAY.isoformat() and len(days) == DAYS
    # per day, the mailbox providers add up to delivery_outcomes
    totals = {
        d.isoformat(): (r, b, o)
        for d, r, b, o in sql(
            synthetic_warehouse,
            "SELECT event_date, SUM(requests), SUM(bounces), SUM(unique_opens) "
            "FROM delivery_outcomes GROUP BY 1",
        )
    }
    for day in mailbox_days:
        rows = [r for r in got["mailbox"] if r["event_date"][:10] == day]
        assert (
            sum(r["requests"] for r in rows),
            sum(r["bounces"] for r in rows),
            sum(r["unique_opens"] for r in rows),
        ) == totals[day]
    # Gmail is gmail.com + googlemail.com; docomo is docomo.ne.jp (the mapping's rows)
    for name, domains in (
        ("Gmail", ("gmail.com", "googlemail.com")),
        ("docomo", ("docomo.ne.jp",)),
    ):
        expect = {
            d.isoformat(): (r, b)
            for d, r, b in sql(
                synthetic_warehouse,
                "SELECT event_date, SUM(requests), SUM(bounces) FROM domain_outcomes "
                "WHERE list_contains(?, recipient_domain) AND event_date <= ? GROUP BY 1",
                [list(domains), LAST_SEND_DAY],
            )
        }
        rows = {
            r["event_date"][:10]: (r["requests"], r["bounces"])
            for r in got["mailbox"]
            if r["mailbox_provider"] == name
        }
        assert rows == expect and expect, name
        summary = next(r for r in got["summary"] if r["mailbox_provider"] == name)
        assert summary["bounce_rate"] == pytest.approx(
            sum(b for _, b in expect.values()) / sum(r for r, _ in expect.values())
        )
    # mailbox providers the mapping knows come first, "other" last
    assert got["summary"][-1]["mailbox_provider"] == "other"
    # the funnel per campaign equals SQL over the events
    first = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=timezone.utc)
    last = datetime(
        LAST_SEND_DAY.year, LAST_SEND_DAY.month, LAST_SEND_DAY.day, tzinfo=timezone.utc
    ) + timedelta(days=1, microseconds=-1)
    named = [f for f in got["funnels"] if f["category"] != "(none)"]
    assert len(named) == 5
    for f in named:
        expect = sql(
            synthetic_warehouse,
            FUNNEL_SQL,
            [
                FIRST_DAY - timedelta(days=1),
                LAST_SEND_DAY + timedelta(days=4),
                f["category"],
                first,
                last,
                first,
                last + timedelta(days=3),
            ],
        )[0]
        assert (f["sent"], f["delivered"], f["opened"], f["clicked"]) == expect, f["category"]
        assert f["sent"] > f["delivered"] > f["opened"] > f["clicked"] > 0


@pytest.mark.slow
def test_bounce_analysis_ranks_domains_by_rate_and_groups_codes(
    synthetic_warehouse, kernel_dir, monkeypatch, tmp_path
):
    nb = execute(
        "bounce_analysis.ipynb",
        synthetic_warehouse,
        kernel_dir,
        monkeypatch,
        tmp_path,
        probe="{'domains': domains.to_dict('records'), "
        "'codes': codes.to_dict('records'), 'end': str(end)}",
    )
    assert not outputs(nb, "error")
    got = probed(nb)
    assert got["end"] == LAST_SEND_DAY.isoformat()
    per_domain = {
        d: (r, b)
        for d, r, b in sql(
            synthetic_warehouse,
            "SELECT recipient_domain, SUM(requests), SUM(bounces) "
            "FROM domain_outcomes WHERE event_date BETWEEN ? AND ? GROUP BY 1",
            [FIRST_DAY, LAST_SEND_DAY],
        )
    }
    by_rate = sorted(
        (d for d, (r, _) in per_domain.items() if r >= 50),
        key=lambda d: -per_domain[d][1] / per_domain[d][0],
    )
    by_count = sorted(per_domain, key=lambda d: -per_domain[d][1])
    worst = by_rate[0]
    # the point of the view: by count the worst domain is not first, by rate it is
    assert by_count[0] != worst and per_domain[worst][1] / per_domain[worst][0] > 0.2
    ranked = got["domains"]
    assert ranked[0]["recipient_domain"] == worst
    assert [r["recipient_domain"] for r in ranked] == by_rate[: len(ranked)]
    for r in ranked:  # volume shown, rate = bounces / requests
        req, bounces = per_domain[r["recipient_domain"]]
        assert (r["requests"], r["bounces"]) == (req, bounces) and req >= 50
        assert r["bounce_rate"] == pytest.approx(bounces / req)
    # enhanced status codes: one row per code across providers
    codes = got["codes"]
    coded = [c["status_code"] for c in codes if c["status_code"] != "(no code)"]
    assert len(coded) == len(set(coded))
    row = next(c for c in codes if c["status_code"] == "5.1.1")
    assert row["providers"] == "cmc,sendgrid,ses"
    code_re = r"(^|[^0-9.])5[.]1[.]1([^0-9.]|$)"
    expect_511 = sql(
        synthetic_warehouse,
        """
        SELECT COUNT(DISTINCT provider || '/' || message_id || '/' || email_hash) FROM events
        WHERE event_type = 'bounce' AND event_date BETWEEN ? AND ?
          AND (regexp_matches(coalesce(smtp_status, ''), ?) OR regexp_matches(coalesce(reason, ''), ?))""",
        [FIRST_DAY, LAST_SEND_DAY, code_re, code_re],
    )[0][0]
    assert row["recipients"] == expect_511 > 0
    # CMC's "rejected by the receiver's policy" (its status 4, no SMTP text) joins the
    # 5.7.1 refusals SendGrid and SES report
    policy = next(c for c in codes if c["status_code"] == "5.7.1")
    assert policy["providers"] == "cmc,sendgrid,ses" and "cmc status 4" in policy["code_basis"]
    # every bounced recipient counted once (CMC reports each failure twice)
    bounced, events = sql(
        synthetic_warehouse,
        """
        SELECT COUNT(DISTINCT provider || '/' || message_id || '/' || email_hash), COUNT(*)
        FROM events WHERE event_type = 'bounce' AND event_date BETWEEN ? AND ?""",
        [FIRST_DAY, LAST_SEND_DAY],
    )[0]
    assert sum(c["recipients"] for c in codes) == bounced < events
    assert sum(c["events"] for c in codes) == events
    # a CMC reason without a code is one row with one class, not two
    no_code = [c for c in codes if c["status_code"] == "(no code)"]
    assert no_code and all("," not in c["bounce_classes"] for c in no_code)
    assert len({c["example_reason"] for c in no_code}) == len(no_code)


FUNNEL_SQL = """
WITH keys AS (
  SELECT provider, message_id, email_hash, MIN(event_ts) AS first_ts,
         bool_or(event_type = 'delivered') AS delivered
  FROM events WHERE event_date BETWEEN ? AND ?
  GROUP BY 1, 2, 3
  HAVING bool_or(event_type IN ('processed', 'dropped', 'deferred', 'delivered', 'bounce')
                 AND list_contains(categories, ?))),
campaign AS (SELECT * FROM keys WHERE first_ts BETWEEN ? AND ?),
engaged AS (
  SELECT provider, message_id, email_hash, bool_or(event_type = 'open') AS opened,
         bool_or(event_type = 'click') AS clicked
  FROM events WHERE event_type IN ('open', 'click') AND event_ts BETWEEN ? AND ?
  GROUP BY 1, 2, 3)
SELECT COUNT(*), COUNT(*) FILTER (WHERE c.delivered),
       COUNT(*) FILTER (WHERE c.delivered AND (e.opened OR e.clicked)),
       COUNT(*) FILTER (WHERE c.delivered AND e.clicked)
FROM campaign c LEFT JOIN engaged e USING (provider, message_id, email_hash)
"""


@pytest.mark.slow
def test_postmortem_funnel_is_delivered_opened_clicked_from_the_events(
    synthetic_warehouse, kernel_dir, monkeypatch, tmp_path
):
    category, day = "reengagement", FIRST_DAY + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    end = start + timedelta(hours=23, minutes=59, seconds=59)
    nb = execute(
        "campaign_postmortem.ipynb",
        synthetic_warehouse,
        kernel_dir,
        monkeypatch,
        tmp_path,
        parameters={
            "CATEGORY": category,
            "SEND_START": start.isoformat(),
            "SEND_END": end.isoformat(),
        },
        probe="{'funnel': funnel['recipients'].to_dict(), "
        "'mailbox': frames.campaign_breakdown(recipients, by='mailbox_provider')"
        ".reset_index().to_dict('records')}",
    )
    assert not outputs(nb, "error")
    # it follows the parameters
    assert "category 'reengagement', sent 2026-11-18 00:00 .. 2026-11-18 23:59 UTC" in text_of(nb)
    assert pngs(nb) == 1
    got = probed(nb)
    expect = sql(
        synthetic_warehouse,
        FUNNEL_SQL,
        [
            day - timedelta(days=1),
            day + timedelta(days=4),
            category,
            start,
            end,
            start,
            end + timedelta(hours=72),
        ],
    )[0]
    funnel = got["funnel"]
    assert list(funnel) == ["sent", "delivered", "opened", "clicked"]
    assert tuple(funnel.values()) == expect
    sent, delivered, opened, clicked = expect
    assert sent > delivered > opened > clicked > 0  # a real funnel, not settled statuses
    # per mailbox provider it adds up to the campaign
    rows = got["mailbox"]
    assert sum(r["recipients"] for r in rows) == sent
    assert sum(r["opened"] for r in rows) == opened
    assert {"Gmail", "docomo"} <= {r["mailbox_provider"] for r in rows}


def test_notebooks_extra_installs_jupyterlab():
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    extras = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "EXTRAS" for t in n.targets)
    )
    notebooks = ast.literal_eval(
        next(v for k, v in zip(extras.keys, extras.values) if ast.literal_eval(k) == "notebooks")
    )
    assert any(req.startswith("jupyterlab") for req in notebooks)


@pytest.mark.slow
def test_readme_jupyter_lab_command_serves_the_notebooks(tmp_path):
    """`jupyter lab notebooks/` (the README's command) from this environment: the server
    starts on loopback and lists the three notebooks."""
    import secrets
    import socket
    import subprocess
    import time
    import urllib.request

    jupyter = Path(sys.executable).parent / "jupyter"
    assert jupyter.exists(), "install the notebooks extra: pip install -e '.[notebooks]'"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(8)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [
            str(jupyter),
            "lab",
            "notebooks/",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            # Jupyter refuses to run as root without it (as in containers like this one)
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        listing, deadline = None, time.monotonic() + 60
        while listing is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5
                ) as r:
                    listing = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert listing is not None, (
            proc.stderr.read().decode() if proc.poll() is not None else "no answer"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert {c["name"] for c in listing["content"]} >= set(NAMES)
