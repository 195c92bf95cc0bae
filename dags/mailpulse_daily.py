"""mailpulse_daily: load the day that just ended, recompute outcomes, alert.

Parsing this file does no I/O: Variables, Connections, the warehouse and the archive
are read only when a task runs, and the ``pipelines`` package is imported inside the
tasks (so the scheduler's parse loop stays fast and never touches the warehouse).
Settings, the hasher, Slack credentials and the failure callback are shared with
mailpulse_intraday (dags/mailpulse_common.py).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import pendulum
from airflow.sdk import (
    CronDataIntervalTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

# Airflow puts the DAGs folder on sys.path; a bare DagBag (tests, CI checks) may not.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailpulse_common as common  # noqa: E402
from mailpulse_common import DEFAULTS, VARIABLES  # noqa: E402,F401  (documented names)

DAG_ID = "mailpulse_daily"

DOC_MD = """
# mailpulse_daily

Every run processes its **data interval**, never its logical date: a scheduled run
covers the UTC day `D` that just ended ([D 00:00, D+1 00:00)); a manual run ("Trigger
DAG", or `airflow dags test mailpulse_daily 2026-11-21`) covers the interval that ends at
its run time, i.e. the last complete day (2026-11-20 here), never a partial today.

1. **resolve_settings**: works out the configuration of this run (below) and shows it in
   its log and XCom (no secrets), with the interval's days and the outcomes window.
2. **load_archive**: runs the Beam load job (`pipelines.load.run_load`) over each day of
   the interval: only archive files not loaded yet (the `loaded_files` manifest), so a
   rerun or a day the intraday DAG already loaded costs what is new. Idempotent.
3. **check_volume**: counts the events of the interval's days in the warehouse; none at
   all is an **empty day** (the collector stopped, a wrong archive path) and alerts.
4. **recompute_outcomes**: recomputes `delivery_outcomes`, `recipient_status` and
   `suppressions` for the window of `window_days` days ending at `D` (default 4:
   `D-3 .. D`), **and** every older `recipient_status` partition whose recipients
   received events in that window (a recipient's row lives in the partition of its
   first send event, so mail deferred on `D-5` and settled today changes partition
   `D-5`). All tables in one transaction: a killed run leaves them as they were.
5. **check_rates**: per category on day `D` (summed over providers), the bounce rate
   (bounces / requests) and the spam-report rate (spam reports / delivered) of
   `delivery_outcomes`. With `alert_mode=baseline` (default) each category is compared
   with its OWN last 28 days (median + 4 x robust spread, at least +1 point of bounces /
   +0.1 point of spam reports), so a normal day is quiet and a spike stands out; a
   category with fewer than 7 days of history uses the fixed thresholds. With
   `alert_mode=fixed`, the thresholds alone. Categories with fewer than `min_volume`
   requests that day (or a history day) are skipped.
6. **notify_slack**: posts one message listing the breaches and an empty day to the
   Slack channel, or logs it (WARNING) when no Slack token is configured. Nothing is
   posted when all is well.

A task that fails (after its retries) posts to the same Slack channel (the failure
callback): which task, which day, the error, the log URL and how to rerun.

## Configuration (first match wins)

| setting | run param (Trigger DAG w/ config) | Airflow Variable | Connection / environment | default |
|---|---|---|---|---|
| warehouse | `warehouse` | `mailpulse_warehouse` | conn `mailpulse_warehouse` (`bigquery://PROJECT/DATASET` or `duckdb:///path`), env `MAILPULSE_WAREHOUSE` | embedded DuckDB file under `$MAILPULSE_DATA_DIR` (`./mailpulse-data`) |
| archive | `archive` | `mailpulse_archive` | env `MAILPULSE_ARCHIVE`, else env `MAILPULSE_SOURCES` (`PROVIDER=URI[?layout=...]` ...) | `$MAILPULSE_DATA_DIR/archive` (`gs://...`, `s3://...` work) |
| Beam runner | `runner` | `mailpulse_runner` | | `DirectRunner` |
| Beam options | `beam_args` (list) | `mailpulse_beam_args` (JSON list) | | none (e.g. `["--project=P", "--region=R", "--temp_location=gs://B/tmp"]`) |
| outcomes window | `window_days` | `mailpulse_window_days` (old name `mailpulse_lookback_days` still read) | | 4 (`D-3 .. D`; the same setting as `mailpulse run/outcomes --window-days`) |
| bounce threshold | `bounce_rate_threshold` | `mailpulse_bounce_rate_threshold` | | 0.05 |
| spam-report threshold | `spam_report_rate_threshold` | `mailpulse_spam_report_rate_threshold` | | 0.003 |
| minimum volume | `min_volume` | `mailpulse_min_volume` | | 100 requests |
| alert mode | `alert_mode` | `mailpulse_alert_mode` | | `baseline` (`fixed`: thresholds only) |
| Slack channel | `slack_channel` | `mailpulse_slack_channel` | conn `mailpulse_slack` extra `channel`, env `MAILPULSE_SLACK_CHANNEL` | none (log only) |
| Slack token | | | conn `mailpulse_slack` password, env `SLACK_BOT_TOKEN` | none (log only) |
| hash key | | `mailpulse_hash_secret` | env `MAILPULSE_HASH_KEY` | development key (DuckDB only) |
| SES category tag | `ses_category_tag` | `mailpulse_ses_category_tag` | | `category` (as `mailpulse load --ses-category-tag`) |
| CMC time zone | `cmc_timezone` | `mailpulse_cmc_timezone` | | `Asia/Tokyo` |
| CMC category field | `cmc_category_field` | `mailpulse_cmc_category_field` | | none (CMC events carry no category), e.g. `apiData` |
| record size limit | `max_record_bytes` | `mailpulse_max_record_bytes` | | 10485760 (longer records become dead letters) |

BigQuery + GCS needs no code change: set `mailpulse_warehouse` to
`bigquery://PROJECT/DATASET`, `mailpulse_archive` to `gs://BUCKET/archive`, the hash key,
and (for Dataflow) `mailpulse_runner=DataflowRunner` plus `mailpulse_beam_args`.

## Rerunning a day

* Whole day, outside the scheduler: `airflow dags test mailpulse_daily 2026-11-21`
  processes **2026-11-20** (a manual run covers the complete day before its date; add
  `-c '{"min_volume": 10}'` to override params).
* In a deployment: *Clear* the day's run (or one task and its downstream tasks) in the
  UI, or `airflow tasks clear mailpulse_daily -s 2026-11-20 -e 2026-11-20 -t load_archive -d`.
  Every task is safe to rerun: the load is idempotent and outcomes replace only the
  window's partitions.
* Backfill a range: `airflow backfill create --dag-id mailpulse_daily --from-date 2026-11-01
  --to-date 2026-11-20` (runs one day at a time: `max_active_runs=1`, as the embedded
  DuckDB file allows one writer).

Failures from configuration (a wrong warehouse URI, a missing hash key) fail at once
without retries; a warehouse lock or other transient error is retried.
"""

RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="pipelines.warehouse.base.TransientWarehouseError",
            action=RetryAction.RETRY,
            retry_delay=timedelta(minutes=1),
            reason="warehouse busy (another writer holds the lock); retrying soon",
        ),
        RetryRule(
            exception=[
                "pipelines.warehouse.base.WarehouseError",
                "pipelines.hashing.MissingHashKey",
                "pipelines.errors.UsageError",
            ],
            action=RetryAction.FAIL,
            reason="configuration problem: fix the setting named in the error, then clear the task",
        ),
    ],
    default=RetryAction.DEFAULT,
)

DEFAULT_ARGS = {
    "owner": "mailpulse",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "retry_policy": RETRY_POLICY,
    "on_failure_callback": common.notify_failure,
}

PARAMS = {
    "warehouse": Param(
        None,
        type=["null", "string"],
        description="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET",
    ),
    "archive": Param(
        None, type=["null", "string"], description="archive root: a directory or gs://..."
    ),
    "runner": Param(None, type=["null", "string"], description="Beam runner, e.g. DataflowRunner"),
    "beam_args": Param(None, type=["null", "array"], description="extra Beam pipeline options"),
    "window_days": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        description="outcome partitions recomputed, ending at the interval's last day (default 4)",
    ),
    "bounce_rate_threshold": Param(None, type=["null", "number"], minimum=0, maximum=1),
    "spam_report_rate_threshold": Param(None, type=["null", "number"], minimum=0, maximum=1),
    "min_volume": Param(
        None,
        type=["null", "integer"],
        minimum=0,
        description="categories with fewer requests that day are not checked",
    ),
    "alert_mode": Param(
        None,
        type=["null", "string"],
        enum=[None, "baseline", "fixed"],
        description="baseline (each category against its own last 28 days; "
        "default) or fixed (the thresholds)",
    ),
    "slack_channel": Param(None, type=["null", "string"], description="channel for alerts"),
    **common.normalize_params(),
}


def _fail_on_configuration(fn, *args, **kwargs):
    """Run ``fn``; a ConfigurationError cannot be fixed by retrying."""
    from pipelines.analysis import ConfigurationError

    try:
        return fn(*args, **kwargs)
    except ConfigurationError as exc:
        raise AirflowFailException(str(exc)) from exc


@dag(
    dag_id=DAG_ID,
    description="Load the day that ended, recompute delivery outcomes, alert on rates, empty days and failures",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    doc_md=DOC_MD,
    tags=["mailpulse"],
    dagrun_timeout=timedelta(hours=6),
)
def mailpulse_daily():

    @task
    def resolve_settings() -> dict:
        import logging

        ctx = get_current_context()
        settings = _fail_on_configuration(
            common.resolve_settings_for,
            dict(ctx["params"]),
            ctx["data_interval_start"],
            ctx["data_interval_end"],
            logical_date=ctx.get("logical_date"),
        )
        logging.getLogger(__name__).info("settings for %s: %s", DAG_ID, settings)
        return settings

    @task(execution_timeout=timedelta(hours=4))
    def load_archive(settings: dict) -> dict:
        from datetime import date

        from pipelines.load import run_load

        run = common.settings_for(settings)
        per_day = []
        for day in settings["interval_days"]:
            report = run_load(None, date.fromisoformat(day), run.warehouse, **run.load_kwargs())
            result = report.as_dict()
            if not report.adds_up():
                raise RuntimeError(f"load counts do not add up (a bug; nothing to rerun): {result}")
            per_day.append(result)
        keys = (
            "files_read",
            "files_skipped",
            "records_read",
            "events_loaded",
            "already_loaded",
            "dead_letters",
        )
        out = {k: sum(r.get(k, 0) or 0 for r in per_day) for k in keys}
        out.update(
            days=settings["interval_days"],
            per_day=per_day,
            adds_up=True,
            status=",".join(sorted({r["status"] for r in per_day})),
        )
        return out

    @task
    def check_volume(settings: dict, load: dict) -> dict:
        from datetime import date

        from pipelines.warehouse import open_warehouse

        wh = open_warehouse(settings["warehouse"])
        days = [date.fromisoformat(d) for d in settings["interval_days"]]
        rows = (
            wh.query(
                "SELECT event_date, COUNT(*) AS n FROM events "
                "WHERE event_date BETWEEN @first AND @last GROUP BY event_date",
                {"first": days[0], "last": days[-1]},
            ).to_pylist()
            if wh.table_exists("events")
            else []
        )
        counts = {r["event_date"].isoformat(): int(r["n"]) for r in rows}
        empty = [d.isoformat() for d in days if not counts.get(d.isoformat())]
        return {
            "events": {d: counts.get(d, 0) for d in settings["interval_days"]},
            "empty_days": empty,
            "files_read": load.get("files_read", 0),
        }

    @task(execution_timeout=timedelta(hours=1))
    def recompute_outcomes(settings: dict, load: dict) -> dict:
        from datetime import date

        from pipelines.analysis import jsonable
        from pipelines.outcomes import compute_outcomes, late_status_partitions

        start = date.fromisoformat(settings["window_start"])
        end = date.fromisoformat(settings["window_end"])
        late = late_status_partitions(settings["warehouse"], start, end)
        result = compute_outcomes(settings["warehouse"], start, end, status_partitions=late)
        return {
            "window_start": settings["window_start"],
            "window_end": settings["window_end"],
            "late_status_partitions": [d.isoformat() for d in late],
            "events_loaded": load.get("events_loaded"),
            "result": jsonable(result),
        }

    @task
    def check_rates(settings: dict, outcomes: dict) -> list[dict]:
        from datetime import date

        from pipelines.analysis import Baseline, Thresholds, baseline_rate_breaches, rate_breaches

        day = date.fromisoformat(settings["day"])
        thresholds = _fail_on_configuration(
            Thresholds,
            bounce_rate=settings["bounce_rate_threshold"],
            spam_report_rate=settings["spam_report_rate_threshold"],
            min_volume=settings["min_volume"],
        )
        if settings.get("alert_mode", "baseline") == "fixed":
            found = rate_breaches(settings["warehouse"], day, thresholds)
        else:
            baseline = _fail_on_configuration(
                Baseline, min_volume=settings["min_volume"], fallback=thresholds
            )
            found = baseline_rate_breaches(settings["warehouse"], day, baseline)
        return [b.as_dict() for b in found]

    @task
    def notify_slack(settings: dict, breaches: list[dict], volume: dict) -> dict:
        from pipelines.analysis import post_rate_alert

        token, api_url = common.slack_credentials()
        where = settings.get("archive") or " ".join(settings.get("source_specs") or [])
        return _fail_on_configuration(
            post_rate_alert,
            breaches,
            day=settings["day"],
            token=token,
            channel=settings["slack_channel"],
            api_url=api_url,
            warehouse=settings["warehouse"],
            empty_days=volume["empty_days"],
            where=where,
            mode=settings.get("alert_mode", "fixed"),
        )

    settings = resolve_settings()
    loaded = load_archive(settings)
    volume = check_volume(settings, loaded)
    outcomes = recompute_outcomes(settings, loaded)
    breaches = check_rates(settings, outcomes)
    notify_slack(settings, breaches, volume)


mailpulse_daily()
