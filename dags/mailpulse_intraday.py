"""mailpulse_intraday: every 10 minutes, load the archive files that are new.

Fresh data for the watcher (``wait_for_events``) on BigQuery, or wherever the daily DAG
is the only loader: each run reads only files not in the ``loaded_files`` manifest, so a
run costs what arrived since the last one, not the whole day. Parsing does no I/O (see
dags/mailpulse_common.py).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

# Airflow puts the DAGs folder on sys.path; a bare DagBag (tests, CI checks) may not.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailpulse_common as common  # noqa: E402

DAG_ID = "mailpulse_intraday"

DOC_MD = """
# mailpulse_intraday

Every 10 minutes (UTC), **load_new_files** runs the incremental load
(`pipelines.load.run_load` without a date): the archive files of the last `days` archive
days (default 4, as `mailpulse load --days`) that are not in the `loaded_files` manifest,
committed with their manifest rows in one transaction. Nothing new: nothing is written.

* `max_active_runs=1`: a slow load delays the next run instead of racing it (the
  embedded DuckDB file takes one writer; two loads at once would read the same files).
* `catchup=False`: after a pause the DAG runs once, not once per missed 10 minutes; that
  one run picks up everything new, since the manifest, not the run's time, decides.
* It does not recompute outcomes: the watcher reads `events` directly, and the daily
  DAG recomputes the derived tables.

Latency: a webhook acknowledged by `mailpulse serve` is in a published archive file
within `--rotate-seconds` (60 s), and in the warehouse after the next run: at most about
11 minutes plus the load's own time. For fresher data on the embedded default, run
`mailpulse load --follow` beside the collector instead.

Configuration: the same Variables, Connections and environment as mailpulse_daily
(warehouse, archive or `MAILPULSE_SOURCES`, runner, Beam options, hash key, Slack for the
failure callback, how records are read: `ses_category_tag`, `cmc_timezone`,
`cmc_category_field`, `max_record_bytes`), plus `days` (run param) /
`mailpulse_intraday_days` (Variable).
"""

PARAMS = {
    "warehouse": Param(
        None,
        type=["null", "string"],
        description="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET",
    ),
    "archive": Param(
        None, type=["null", "string"], description="archive root: a directory or gs://..."
    ),
    "runner": Param(None, type=["null", "string"], description="Beam runner"),
    "beam_args": Param(None, type=["null", "array"], description="extra Beam pipeline options"),
    "days": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        description="archive days scanned for new files, ending today (default 4)",
    ),
    "slack_channel": Param(None, type=["null", "string"], description="channel for failures"),
    **common.normalize_params(),
}


@dag(
    dag_id=DAG_ID,
    description="Every 10 minutes: load the archive files not loaded yet (incremental)",
    schedule=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "mailpulse",
        # the next run 10 minutes later is the retry: no retry storm behind it
        "retries": 0,
        "on_failure_callback": common.notify_failure,
    },
    params=PARAMS,
    doc_md=DOC_MD,
    tags=["mailpulse"],
    dagrun_timeout=timedelta(hours=1),
)
def mailpulse_intraday():

    @task
    def resolve_settings() -> dict:
        import logging

        from pipelines.analysis import ConfigurationError

        ctx = get_current_context()
        try:
            s = common.resolve_settings_for(
                dict(ctx["params"]),
                ctx["data_interval_start"],
                ctx["data_interval_end"],
                logical_date=ctx.get("logical_date"),
                rates=False,
            )
        except ConfigurationError as exc:  # retrying cannot fix a setting
            raise AirflowFailException(str(exc)) from exc
        # "today" for the load: the run's time, not the wall clock of a late worker
        s["today"] = ctx["data_interval_end"].date().isoformat()
        logging.getLogger(__name__).info("settings for %s: %s", DAG_ID, s)
        return s

    @task(execution_timeout=timedelta(minutes=50))
    def load_new_files(settings: dict) -> dict:
        from datetime import date

        from pipelines.load import run_load

        run = common.settings_for(settings)
        report = run_load(
            None,
            None,
            run.warehouse,
            **run.load_kwargs(),
            today=date.fromisoformat(settings["today"]),
            record_idle=False,
        )
        result = report.as_dict()
        if not report.adds_up():
            raise RuntimeError(f"load counts do not add up (a bug; nothing to rerun): {result}")
        return result

    load_new_files(resolve_settings())


mailpulse_intraday()
