"""The Airflow DAG ``mailpulse_daily`` (dags/mailpulse_daily.py), with real Airflow 3.

Airflow reads AIRFLOW_HOME and its configuration once per process and keeps global
state (ORM, settings, an in-process execution API), so every Airflow call here runs in
a subprocess with its own AIRFLOW_HOME in a tmp dir and a fresh SQLite metadata DB
(tests/airflow_driver.py). The DAG loads a hand-built SendGrid archive with known
rates (tests/archive_support.py) into a temporary DuckDB warehouse, and the alert goes
to the suite's local Slack-compatible server through slack_sdk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from archive_support import CategorySpec, sendgrid_events, write_sendgrid_day
from conftest import ROOT, TEST_HASH_KEY

DAG_ID = "mailpulse_daily"
DAY = date(2026, 11, 20)
NEXT = date(2026, 11, 21)  # a run at NEXT 00:00 covers DAY
#: promo bounces 16/200 = 8 % (> 5 %; its 4 blocks are counted apart); digest reports
#: spam 2/150 = 1.3 % (> 0.3 %); tiny bounces 5/10 = 50 % but is below the minimum
#: volume of 50; newsletter is healthy (1 %).
SPEC = {
    "promo": CategorySpec(200, bounces=16, blocks=4, opens=50),
    "digest": CategorySpec(150, spam_reports=2, opens=30, deferred=5),
    "tiny": CategorySpec(10, bounces=5),
    "newsletter": CategorySpec(200, bounces=2, opens=80),
}
EXPECTED_EVENTS = sum(len(sendgrid_events(DAY, c, s)) for c, s in SPEC.items())


def airflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for an isolated Airflow (set before Airflow is first imported)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MAILPULSE_", "SLACK_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            "MAILPULSE_HASH_KEY": TEST_HASH_KEY,
            "TZ": "UTC",
        }
    )
    env.update(extra)
    return env


def run_driver(
    tmp_path: Path, runs: list[dict], env: dict[str, str], timeout=240, dag_id: str = DAG_ID
) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "airflow_driver.py"), dag_id, json.dumps(runs)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"runs"')]
    assert proc.returncode == 0 and lines, (
        f"driver exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-6000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    )
    result = json.loads(lines[-1])
    assert result["import_errors"] == {}
    (tmp_path / "airflow-output.txt").write_text(proc.stdout + proc.stderr)
    return result["runs"]


def query(path: Path, sql: str, params=None):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


# -- parsing ---------------------------------------------------------------------------

PARSE_CHECK = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()},
       "dags": sorted(bag.dags)}
intraday = bag.dags.get("mailpulse_intraday")
if intraday is not None:
    out["intraday"] = dict(
        tasks={t.task_id: sorted(t.upstream_task_ids) for t in intraday.tasks},
        catchup=intraday.catchup, max_active_runs=intraday.max_active_runs,
        timetable=type(intraday.timetable).__name__,
        summary=getattr(intraday.timetable, "expression", ""),
        params=sorted(intraday.params.keys()),
        callbacks=sorted({t.on_failure_callback[0].__name__ if isinstance(
            t.on_failure_callback, list) else getattr(t.on_failure_callback, "__name__", "")
            for t in intraday.tasks}))
dag = bag.dags.get("mailpulse_daily")
if dag is not None:
    out.update(
        callbacks=sorted({t.on_failure_callback[0].__name__ if isinstance(
            t.on_failure_callback, list) else getattr(t.on_failure_callback, "__name__", "")
            for t in dag.tasks}),
        tasks={t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        retries={t.task_id: t.retries for t in dag.tasks},
        retry_policy={t.task_id: type(t.retry_policy).__name__ for t in dag.tasks},
        catchup=dag.catchup, max_active_runs=dag.max_active_runs,
        timetable=type(dag.timetable).__name__,
        params=sorted(dag.params.keys()), doc_md=dag.doc_md or "",
        heavy=sorted(m for m in ("apache_beam", "duckdb", "pandas", "pipelines.load",
                                 "pipelines.outcomes", "slack_sdk") if m in sys.modules))
print(json.dumps(out))
"""


def test_dagbag_imports_the_dag_without_errors_and_without_io(tmp_path):
    data_dir = tmp_path / "data"  # the embedded default: parsing must not create it
    env = airflow_env(
        tmp_path,
        MAILPULSE_DATA_DIR=str(data_dir),
        # a Variable that would fail if it were read at parse time
        AIRFLOW_VAR_MAILPULSE_WINDOW_DAYS="not-a-number",
    )
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_CHECK, str(ROOT / "dags")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["import_errors"] == {}
    assert out["dags"] == [DAG_ID, "mailpulse_intraday"]
    assert out["tasks"] == {
        "resolve_settings": [],
        "load_archive": ["resolve_settings"],
        "check_volume": ["load_archive", "resolve_settings"],
        "recompute_outcomes": ["load_archive", "resolve_settings"],
        "check_rates": ["recompute_outcomes", "resolve_settings"],
        "notify_slack": ["check_rates", "check_volume", "resolve_settings"],
    }
    assert out["callbacks"] == ["notify_failure"]
    intraday = out["intraday"]
    assert intraday["catchup"] is False and intraday["max_active_runs"] == 1
    assert intraday["summary"] == "*/10 * * * *"
    assert intraday["callbacks"] == ["notify_failure"]
    assert "load_new_files" in intraday["tasks"]
    assert set(out["retries"].values()) == {2}
    assert set(out["retry_policy"].values()) == {"ExceptionRetryPolicy"}
    assert out["catchup"] is True and out["max_active_runs"] == 1
    assert out["timetable"] == "CronDataIntervalTimetable"
    assert {
        "warehouse",
        "archive",
        "runner",
        "beam_args",
        "window_days",
        "min_volume",
        "bounce_rate_threshold",
        "spam_report_rate_threshold",
        "slack_channel",
        "ses_category_tag",
        "cmc_timezone",
        "cmc_category_field",
        "max_record_bytes",
    } <= set(out["params"])
    assert {"ses_category_tag", "cmc_timezone", "cmc_category_field", "max_record_bytes"} <= set(
        intraday["params"]
    )
    assert "airflow dags test mailpulse_daily 2026-11-21" in out["doc_md"]
    assert "data interval" in out["doc_md"]
    assert "airflow tasks clear" in out["doc_md"]
    # No I/O and no heavy imports at parse time: the package's jobs load inside tasks.
    assert out["heavy"] == []
    assert not data_dir.exists()
    assert not list(tmp_path.rglob("*.duckdb"))


# -- a real run --------------------------------------------------------------------------


@pytest.mark.slow
def test_daily_run_loads_recomputes_and_alerts_then_reruns_idempotently(tmp_path, slack_server):
    archive = tmp_path / "archive"
    write_sendgrid_day(archive, DAY, SPEC)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    slack_conn = json.dumps(
        {
            "conn_type": "slack",
            "password": slack_server.token,
            "extra": {"channel": slack_server.channel, "api_url": slack_server.base_url},
        }
    )
    env = airflow_env(
        tmp_path,
        # configuration by Airflow Variables and a Connection (env-var secrets backend)
        AIRFLOW_VAR_MAILPULSE_WAREHOUSE=f"duckdb://{warehouse}",
        AIRFLOW_VAR_MAILPULSE_ARCHIVE=str(archive),
        AIRFLOW_CONN_MAILPULSE_SLACK=slack_conn,
        # the embedded default's location: must stay unused when Variables are set
        MAILPULSE_DATA_DIR=str(tmp_path / "unused-default"),
    )
    runs = run_driver(
        tmp_path,
        [
            # the day (the run whose data interval is DAY), with a run param overriding the
            # default minimum volume (100)
            {"date": NEXT.isoformat(), "conf": {"min_volume": 50}},
            # a rerun of the same day without Slack: nothing is loaded twice, the alert is
            # logged, and the smaller minimum volume now lets "tiny" alert too
            {
                "date": NEXT.isoformat(),
                "conf": {"min_volume": 5},
                "env": {"AIRFLOW_CONN_MAILPULSE_SLACK": ""},
            },
        ],
        env,
    )
    first, rerun = runs

    assert first["state"] == "success", first["tasks"]
    assert set(first["tasks"].values()) == {"success"}
    settings = first["xcom"]["resolve_settings"]
    assert settings["warehouse"] == f"duckdb://{warehouse}"
    assert settings["sources"]["warehouse"] == "variable"
    assert settings["sources"]["min_volume"] == "param" and settings["min_volume"] == 50
    assert settings["sources"]["window_days"] == "default" and settings["window_days"] == 4
    assert settings["interval_days"] == [DAY.isoformat()] and settings["day"] == DAY.isoformat()
    assert first["data_interval"][0].startswith("2026-11-20T00:00:00")
    assert (settings["window_start"], settings["window_end"]) == ("2026-11-17", "2026-11-20")
    assert settings["slack_channel"] == slack_server.channel
    assert "password" not in json.dumps(settings) and slack_server.token not in json.dumps(settings)

    load = first["xcom"]["load_archive"]
    assert load["records_read"] == EXPECTED_EVENTS == load["events_loaded"] and load["adds_up"]
    assert first["xcom"]["check_volume"]["empty_days"] == []
    assert query(warehouse, "SELECT count(*) FROM events WHERE event_date = ?", [DAY]) == [
        (EXPECTED_EVENTS,)
    ]

    rows = query(
        warehouse,
        """
        SELECT category, provider, requests, delivered, bounces, blocks, deferred,
               spam_reports, unique_opens
        FROM delivery_outcomes WHERE event_date = ? ORDER BY category""",
        [DAY],
    )
    assert rows == [
        ("digest", "sendgrid", 150, 150, 0, 0, 5, 2, 30),
        ("newsletter", "sendgrid", 200, 198, 2, 0, 0, 0, 80),
        ("promo", "sendgrid", 200, 180, 16, 4, 0, 0, 50),
        ("tiny", "sendgrid", 10, 5, 5, 0, 0, 0, 0),
    ]
    assert first["xcom"]["recompute_outcomes"]["result"]["delivery_outcomes"] == 4

    breaches = first["xcom"]["check_rates"]
    assert [(b["category"], b["metric"], b["numerator"], b["denominator"]) for b in breaches] == [
        ("digest", "spam_report_rate", 2, 150),
        ("promo", "bounce_rate", 16, 200),
    ]
    notified = first["xcom"]["notify_slack"]
    assert notified["posted"] is True and notified["breaches"] == 2
    messages = slack_server.messages
    assert len(messages) == 1
    text = messages[0]["text"]
    assert messages[0]["channel"] == slack_server.channel
    assert "2 rate alert(s) for 2026-11-20" in text
    assert "*promo*: bounce rate (bounces / requests) 8.00% > 5.00%" in text
    assert "*digest*: spam-report rate (spam reports / delivered) 1.33% > 0.30%" in text
    assert "tiny" not in text and "newsletter" not in text

    assert rerun["state"] == "success", rerun["tasks"]
    again = rerun["xcom"]["load_archive"]
    # the loaded_files manifest: the rerun reads no file again and adds nothing
    assert (again["events_loaded"], again["files_read"]) == (0, 0)
    assert again["files_skipped"] == first["xcom"]["load_archive"]["files_read"] > 0
    assert query(warehouse, "SELECT count(*) FROM events") == [(EXPECTED_EVENTS,)]
    assert query(warehouse, "SELECT count(*) FROM delivery_outcomes") == [(4,)]
    assert [b["category"] for b in rerun["xcom"]["check_rates"]] == ["digest", "promo", "tiny"]
    logged = rerun["xcom"]["notify_slack"]
    assert logged["posted"] is False and logged["reason"] == "no Slack token"
    assert "*tiny*: bounce rate (bounces / requests) 50.00%" in logged["text"]
    assert len(slack_server.messages) == 1  # nothing more was posted
    assert not (tmp_path / "unused-default").exists()


# -- late settlement, empty days, a manual run's interval, a failing task ------------------

D = date(2026, 11, 20)
SENT = datetime(2026, 11, 20, 22, 0, tzinfo=timezone.utc)  # late on day D
SETTLED = SENT + timedelta(hours=71)  # 2026-11-23 21:00, on day D+3


def write_late_settling_archive(archive: Path, n: int = 100, bounced: int = 20) -> None:
    """``n`` recipients processed and deferred on D at 22:00; 71 hours later (D+3)
    ``n - bounced`` delivered and ``bounced`` bounced. Days D+1 and D+2 have no file."""
    sends, settles = [], []
    for i in range(n):
        email, mid = f"late-{i}@example.com", f"late{i:04d}"
        sg = f"{mid}.filter0001.1.{i}.0"

        def ev(kind, ts, **extra):
            return {
                "email": email,
                "timestamp": int(ts.timestamp()),
                "event": kind,
                "sg_event_id": f"{mid}-{kind}",
                "sg_message_id": sg,
                "category": ["late-campaign"],
                **extra,
            }

        sends += [
            ev("processed", SENT + timedelta(seconds=i)),
            ev(
                "deferred",
                SENT + timedelta(seconds=i + 30),
                attempt="1",
                response="451 4.7.1 try again later",
            ),
        ]
        settles.append(
            ev(
                "bounce",
                SETTLED + timedelta(seconds=i),
                type="bounce",
                status="5.1.1",
                reason="550 5.1.1 unknown user",
            )
            if i < bounced
            else ev("delivered", SETTLED + timedelta(seconds=i), response="250 OK")
        )
    for when, events in ((SENT, sends), (SETTLED, settles)):
        folder = archive / "sendgrid" / f"{when:%Y/%m/%d/%H}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"webhook-{when:%Y%m%d%H}.json").write_text(json.dumps(events) + "\n")


@pytest.mark.slow
def test_consecutive_daily_runs_settle_late_mail_alert_empty_days_and_failures(
    tmp_path, slack_server
):
    """Five consecutive daily runs (D .. D+4) with a two-day window: mail deferred on D
    at 22:00 and settled 71 h later lands in its partition D (before: all 100 still
    deferred after five runs). D+1 and D+2 have no events: each alerts. Then a manual run
    mid-day covers the completed day before it, and a failing task's callback posts."""
    archive = tmp_path / "archive"
    write_late_settling_archive(archive)
    # a partial "today" for the manual run: must not be processed
    write_sendgrid_day(archive, date(2026, 11, 26), {"partial": CategorySpec(10)}, hour=9)
    write_sendgrid_day(archive, date(2026, 11, 25), {"yesterday": CategorySpec(20)}, hour=9)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    slack_conn = json.dumps(
        {
            "conn_type": "slack",
            "password": slack_server.token,
            "extra": {"channel": slack_server.channel, "api_url": slack_server.base_url},
        }
    )
    env = airflow_env(
        tmp_path,
        AIRFLOW_VAR_MAILPULSE_WAREHOUSE=f"duckdb://{warehouse}",
        AIRFLOW_VAR_MAILPULSE_ARCHIVE=str(archive),
        AIRFLOW_VAR_MAILPULSE_WINDOW_DAYS="2",
        AIRFLOW_CONN_MAILPULSE_SLACK=slack_conn,
    )
    daily = [{"date": (D + timedelta(days=k + 1)).isoformat()} for k in range(5)]
    runs = run_driver(
        tmp_path,
        daily
        + [
            {"date": "2026-11-26T10:37:00"},  # a manual run at 10:37
            {"date": "2026-11-28", "conf": {"warehouse": "duckdb:///"}},  # fails: names no file
        ],
        env,
        timeout=900,
    )
    *scheduled, manual, failing = runs
    for k, run in enumerate(scheduled):
        assert run["state"] == "success", (k, run["tasks"])
        assert run["xcom"]["resolve_settings"]["interval_days"] == [
            (D + timedelta(days=k)).isoformat()
        ]
    # the window (two days) never reaches back to D from D+3: the late partition does
    late = [r["xcom"]["recompute_outcomes"]["late_status_partitions"] for r in scheduled]
    assert late == [[], [], [], ["2026-11-20"], ["2026-11-20"]]
    assert scheduled[3]["xcom"]["recompute_outcomes"]["window_start"] == "2026-11-22"
    assert query(
        warehouse,
        """SELECT event_date, status, count(*) FROM recipient_status
                               WHERE message_id LIKE 'late%' GROUP BY ALL ORDER BY status""",
    ) == [(D, "bounce", 20), (D, "delivered", 80)]
    # the settlement day's delivery outcomes count the late outcomes on their own day
    assert query(
        warehouse,
        """SELECT event_date, sum(delivered), sum(bounces) FROM delivery_outcomes
                               WHERE category = 'late-campaign' AND event_date >= ?
                               GROUP BY ALL ORDER BY 1""",
        [D],
    ) == [(D, 0, 0), (date(2026, 11, 23), 80, 20)]

    # empty days alert: D+1 and D+2 have no event at all; D+4 neither
    empties = [r["xcom"]["check_volume"]["empty_days"] for r in scheduled]
    assert empties == [[], ["2026-11-21"], ["2026-11-22"], [], ["2026-11-24"]]
    texts = [m["text"] for m in slack_server.messages]
    empty_texts = [t for t in texts if "no events at all" in t]
    assert [t.split("for ")[1].split(" ")[0] for t in empty_texts] == [
        "2026-11-21",
        "2026-11-22",
        "2026-11-24",
    ]
    assert "collector" in empty_texts[0] and str(archive) in empty_texts[0]
    # D+3's rates: 20 % bounces in late-campaign (of 100 requests? requests are counted on
    # the first send event's day, D, so D+3 has 0 requests and no rate alert)
    assert not any("rate alert" in t and "2026-11-23" in t for t in texts)

    # the manual run at 2026-11-26 10:37 covers 2026-11-25 (complete), not the partial 26th
    assert manual["state"] == "success", manual["tasks"]
    assert manual["data_interval"][0].startswith("2026-11-25T00:00:00")
    assert manual["xcom"]["resolve_settings"]["interval_days"] == ["2026-11-25"]
    assert query(
        warehouse, "SELECT count(*) FROM events WHERE event_date = ?", [date(2026, 11, 26)]
    ) == [(0,)]
    assert query(
        warehouse, "SELECT count(*) > 0 FROM events WHERE event_date = ?", [date(2026, 11, 25)]
    ) == [(True,)]

    # the failing task: no retries for a configuration error, the callback posts
    assert failing["state"] == "failed"
    assert failing["tasks"]["load_archive"] == "failed"
    failures = [m for m in slack_server.messages if ":x: mailpulse" in m["text"]]
    assert len(failures) == 1, [m["text"] for m in slack_server.messages]
    text = failures[0]["text"]
    assert failures[0]["channel"] == slack_server.channel
    assert "mailpulse_daily.load_archive failed for 2026-11-27" in text
    assert "names no file" in text and "airflow tasks clear mailpulse_daily -t load_archive" in text
    assert slack_server.token not in text


@pytest.mark.slow
def test_intraday_runs_load_only_new_files(tmp_path):
    """Two runs of mailpulse_intraday ten minutes apart: the first loads today's and
    yesterday's files, the second only the file that arrived in between."""
    archive = tmp_path / "archive"
    today, yesterday = date(2026, 11, 26), date(2026, 11, 25)
    write_sendgrid_day(archive, yesterday, {"a": CategorySpec(30)}, hour=22)
    write_sendgrid_day(archive, today, {"b": CategorySpec(20)}, hour=8)
    new_file = archive / "sendgrid" / "2026/11/26/10" / "webhook-new.json"
    new_events = sendgrid_events(today, "c", CategorySpec(5), hour=10)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    env = airflow_env(
        tmp_path,
        AIRFLOW_VAR_MAILPULSE_WAREHOUSE=f"duckdb://{warehouse}",
        AIRFLOW_VAR_MAILPULSE_ARCHIVE=str(archive),
    )
    first, second, idle = run_driver(
        tmp_path,
        [
            {"date": "2026-11-26T10:00:00"},
            {
                "date": "2026-11-26T10:10:00",
                "write": {str(new_file): json.dumps(new_events) + "\n"},
            },
            {"date": "2026-11-26T10:20:00"},
        ],
        env,
        dag_id="mailpulse_intraday",
    )
    for run in (first, second, idle):
        assert run["state"] == "success", run["tasks"]
    assert first["xcom"]["resolve_settings"]["today"] == "2026-11-26"
    a = first["xcom"]["load_new_files"]
    assert (a["files_read"], a["files_skipped"]) == (2, 0)
    assert (a["first_date"], a["date"]) == ("2026-11-23", "2026-11-26")  # the last 4 days
    b = second["xcom"]["load_new_files"]
    assert (b["files_read"], b["files_skipped"]) == (1, 2)
    assert b["events_loaded"] == len(new_events)
    c = idle["xcom"]["load_new_files"]
    assert (c["files_read"], c["files_skipped"], c["status"]) == (0, 3, "up_to_date")
    assert query(warehouse, "SELECT count(*) FROM events") == [
        (a["events_loaded"] + b["events_loaded"],)
    ]
    # nothing new: nothing written (no loads row for the idle run)
    assert query(warehouse, "SELECT count(*) FROM loads") == [(2,)]


@pytest.mark.slow
def test_intraday_run_params_set_how_records_are_read(tmp_path):
    """A run's conf sets the CMC category field and time zone (run params, as
    `mailpulse load --cmc-category-field/--cmc-timezone`): the load uses them. A time zone
    that does not exist fails the first task, before anything is read."""
    archive = tmp_path / "archive"
    cmc_file = archive / "cmc" / "2026/11/26/10" / "webhook-1.json"
    cmc_file.parent.mkdir(parents=True)
    cmc_file.write_bytes((ROOT / "tests" / "payloads" / "cmc" / "v2_deliveries.json").read_bytes())
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    env = airflow_env(
        tmp_path,
        AIRFLOW_VAR_MAILPULSE_WAREHOUSE=f"duckdb://{warehouse}",
        AIRFLOW_VAR_MAILPULSE_ARCHIVE=str(archive),
    )
    bad, good = run_driver(
        tmp_path,
        [
            {"date": "2026-11-26T10:10:00", "conf": {"cmc_timezone": "Mars/Base"}},
            {
                "date": "2026-11-26T10:20:00",
                "conf": {"cmc_category_field": "apiData", "cmc_timezone": "UTC"},
            },
        ],
        env,
        dag_id="mailpulse_intraday",
    )
    assert bad["state"] == "failed"
    assert "success" not in bad["tasks"].values()
    assert good["state"] == "success", good["tasks"]
    settings = good["xcom"]["resolve_settings"]
    assert (settings["cmc_category_field"], settings["cmc_timezone"]) == ("apiData", "UTC")
    assert settings["sources"]["cmc_category_field"] == "param"
    assert good["xcom"]["load_new_files"]["events_loaded"] == 2
    rows = query(
        warehouse,
        "SELECT categories, strftime(event_ts, '%Y-%m-%d %H:%M:%S') FROM events ORDER BY event_ts",
    )
    assert rows == [
        (["CMC00123"], "2015-12-14 10:53:52"),  # "created" read as UTC, not Japan time
        (["CMC00123"], "2015-12-14 10:53:53"),
    ]
