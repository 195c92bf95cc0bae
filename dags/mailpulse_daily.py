"""mailpulse_daily: load one archive day, recompute outcomes, alert on bad rates.

Parsing this file does no I/O: Variables, Connections, the warehouse and the archive
are read only when a task runs, and the ``pipelines`` package is imported inside the
tasks (so the scheduler's parse loop stays fast and never touches the warehouse).
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import (CronDataIntervalTimetable, ExceptionRetryPolicy, Param, RetryAction,
                         RetryRule, dag, get_current_context, task)
from airflow.sdk.exceptions import AirflowFailException

DAG_ID = "mailpulse_daily"

#: Airflow Variables the DAG reads (each may be overridden per run by the param of the
#: same name without the prefix). Names that contain "secret" are masked in logs.
VARIABLES = {
    "warehouse": "mailpulse_warehouse",
    "archive": "mailpulse_archive",
    "runner": "mailpulse_runner",
    "beam_args": "mailpulse_beam_args",
    "lookback_days": "mailpulse_lookback_days",
    "bounce_rate_threshold": "mailpulse_bounce_rate_threshold",
    "spam_report_rate_threshold": "mailpulse_spam_report_rate_threshold",
    "min_volume": "mailpulse_min_volume",
    "slack_channel": "mailpulse_slack_channel",
    "hash_key": "mailpulse_hash_secret",
}
#: Connections the DAG reads when they exist.
WAREHOUSE_CONN_ID = "mailpulse_warehouse"
SLACK_CONN_ID = "mailpulse_slack"

#: What applies when neither the run, a Variable nor a Connection says otherwise.
DEFAULTS = {
    "runner": "DirectRunner",
    "beam_args": [],
    "lookback_days": 3,
    # bounces / requests per category and day (delivery_outcomes.bounce_rate; blocks
    # are counted apart, as in SendGrid's stats).
    "bounce_rate_threshold": 0.05,
    # Share of delivered mail reported as spam; Gmail and Yahoo require bulk senders to
    # stay below 0.3 %.
    "spam_report_rate_threshold": 0.003,
    # Categories with fewer requests (messages x recipients sent) that day are not checked.
    "min_volume": 100,
}

DOC_MD = """
# mailpulse_daily

Every day, for the run's **logical date** `D` (the UTC day that just ended):

1. **resolve_settings**: works out the configuration of this run (below) and shows it in
   its log and XCom (no secrets).
2. **load_archive**: runs the Beam load job (`pipelines.load.run_load`) over the archive
   files of day `D` (`<archive>/<provider>/YYYY/MM/DD/HH/*`) and commits them to the
   warehouse. Loads are idempotent: rerunning a day adds nothing twice.
3. **recompute_outcomes**: recomputes `delivery_outcomes`, `recipient_status` and
   `suppressions` for the look-back window `D - (lookback_days - 1)` .. `D` (default
   3 days), so late events (deferrals settle within 72 h) update earlier days.
4. **check_rates**: per category on day `D` (summed over providers), compares the bounce
   rate (bounces / requests) and the spam-report rate (spam reports / delivered) of
   `delivery_outcomes` with the thresholds. Categories with fewer than `min_volume`
   requests that day are skipped.
5. **notify_slack**: posts one message listing the breaches to the Slack channel, or logs
   it (WARNING) when no Slack token is configured. Nothing is posted when all is well.

## Configuration (first match wins)

| setting | run param (Trigger DAG w/ config) | Airflow Variable | Connection / environment | default |
|---|---|---|---|---|
| warehouse | `warehouse` | `mailpulse_warehouse` | conn `mailpulse_warehouse` (`bigquery://PROJECT/DATASET` or `duckdb:///path`), env `MAILPULSE_WAREHOUSE` | embedded DuckDB file under `$MAILPULSE_DATA_DIR` (`./mailpulse-data`) |
| archive | `archive` | `mailpulse_archive` | env `MAILPULSE_ARCHIVE` | `$MAILPULSE_DATA_DIR/archive` (`gs://...` works) |
| Beam runner | `runner` | `mailpulse_runner` | | `DirectRunner` |
| Beam options | `beam_args` (list) | `mailpulse_beam_args` (JSON list) | | none (e.g. `["--project=P", "--region=R", "--temp_location=gs://B/tmp"]`) |
| look-back days | `lookback_days` | `mailpulse_lookback_days` | | 3 |
| bounce threshold | `bounce_rate_threshold` | `mailpulse_bounce_rate_threshold` | | 0.05 |
| spam-report threshold | `spam_report_rate_threshold` | `mailpulse_spam_report_rate_threshold` | | 0.003 |
| minimum volume | `min_volume` | `mailpulse_min_volume` | | 100 requests |
| Slack channel | `slack_channel` | `mailpulse_slack_channel` | conn `mailpulse_slack` extra `channel`, env `MAILPULSE_SLACK_CHANNEL` | none (log only) |
| Slack token | | | conn `mailpulse_slack` password, env `SLACK_BOT_TOKEN` | none (log only) |
| hash key | | `mailpulse_hash_secret` | env `MAILPULSE_HASH_KEY` | development key (DuckDB only) |

BigQuery + GCS needs no code change: set `mailpulse_warehouse` to
`bigquery://PROJECT/DATASET`, `mailpulse_archive` to `gs://BUCKET/archive`, the hash key,
and (for Dataflow) `mailpulse_runner=DataflowRunner` plus `mailpulse_beam_args`.

## Rerunning a day

* Whole day, outside the scheduler: `airflow dags test mailpulse_daily 2026-11-20`
  (add `-c '{"min_volume": 10}'` to override params).
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

RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception="pipelines.warehouse.base.TransientWarehouseError",
              action=RetryAction.RETRY, retry_delay=timedelta(minutes=1),
              reason="warehouse busy (another writer holds the lock); retrying soon"),
    RetryRule(exception=["pipelines.warehouse.base.WarehouseError",
                         "pipelines.hashing.MissingHashKey"],
              action=RetryAction.FAIL,
              reason="configuration problem: fix the setting named in the error, then clear the task"),
], default=RetryAction.DEFAULT)

DEFAULT_ARGS = {
    "owner": "mailpulse",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "retry_policy": RETRY_POLICY,
}

PARAMS = {
    "warehouse": Param(None, type=["null", "string"],
                       description="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET"),
    "archive": Param(None, type=["null", "string"], description="archive root: a directory or gs://..."),
    "runner": Param(None, type=["null", "string"], description="Beam runner, e.g. DataflowRunner"),
    "beam_args": Param(None, type=["null", "array"], description="extra Beam pipeline options"),
    "lookback_days": Param(None, type=["null", "integer"], minimum=1,
                           description="days of outcomes to recompute, ending at the logical date"),
    "bounce_rate_threshold": Param(None, type=["null", "number"], minimum=0, maximum=1),
    "spam_report_rate_threshold": Param(None, type=["null", "number"], minimum=0, maximum=1),
    "min_volume": Param(None, type=["null", "integer"], minimum=0,
                        description="categories with fewer requests that day are not checked"),
    "slack_channel": Param(None, type=["null", "string"], description="channel for alerts"),
}


def _variable(name: str):
    from airflow.sdk import Variable
    return Variable.get(VARIABLES[name], default=None)


def _connection(conn_id: str):
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _warehouse_from_connection(conn) -> str | None:
    """``bigquery``: host = project, schema = dataset; ``duckdb``: extra ``path`` or
    schema = file path; any type: extra ``uri``."""
    if conn is None:
        return None
    extra = conn.extra_dejson or {}
    if extra.get("uri"):
        return extra["uri"]
    kind = (conn.conn_type or "").lower()
    if kind in ("bigquery", "google_cloud_platform", "gcpbigquery"):
        project = conn.host or extra.get("project")
        dataset = conn.schema or extra.get("dataset")
        if project and dataset:
            return f"bigquery://{project}/{dataset}"
    if kind == "duckdb":
        path = extra.get("path") or conn.schema or conn.host
        if path:
            return f"duckdb://{path}"  # duckdb:///abs/file.duckdb or duckdb://relative/file
    from pipelines.analysis import ConfigurationError
    raise ConfigurationError(
        f"connection {WAREHOUSE_CONN_ID!r} (type {conn.conn_type!r}) does not name a warehouse: "
        "use type bigquery with host=PROJECT and schema=DATASET, type duckdb with "
        'extra {"path": "/abs/file.duckdb"}, or any type with extra {"uri": "..."}')


def resolve_settings_for(params: dict, logical_day) -> dict:
    """The run's configuration: run params, then Variables, then Connections and the
    environment, then :data:`DEFAULTS` and the embedded warehouse (no secrets)."""
    import json
    import os
    from datetime import timedelta as _td

    from pipelines.analysis import ConfigurationError
    from pipelines.config import default_archive, default_warehouse_uri

    def pick(name):
        """(value, where it came from) from the run's params or the Variable."""
        if params.get(name) not in (None, ""):
            return params[name], "param"
        value = _variable(name)
        if value not in (None, ""):
            return value, "variable"
        return None, None

    s: dict = {"logical_date": logical_day.isoformat()}
    sources: dict = {}
    wh, src = pick("warehouse")
    if wh is None:
        wh, src = _warehouse_from_connection(_connection(WAREHOUSE_CONN_ID)), "connection"
    if wh is None:
        wh, src = os.environ.get("MAILPULSE_WAREHOUSE") or None, "environment"
    if wh is None:
        wh, src = default_warehouse_uri(), "default"
    s["warehouse"], sources["warehouse"] = wh, src
    archive, src = pick("archive")
    if archive is None:
        archive, src = (os.environ.get("MAILPULSE_ARCHIVE"), "environment") \
            if os.environ.get("MAILPULSE_ARCHIVE") else (default_archive(), "default")
    s["archive"], sources["archive"] = archive, src
    for name, cast in (("runner", str), ("lookback_days", int),
                       ("bounce_rate_threshold", float), ("spam_report_rate_threshold", float),
                       ("min_volume", int)):
        value, src = pick(name)
        if value is None:
            value, src = DEFAULTS[name], "default"
        try:
            s[name] = cast(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{name} = {value!r} (from the {src}) is not a valid {cast.__name__}; fix the "
                f"run param {name!r} or the Variable {VARIABLES[name]!r}") from None
        sources[name] = src
    beam_args, src = pick("beam_args")
    if isinstance(beam_args, str):
        try:
            beam_args = json.loads(beam_args)
        except ValueError:
            raise ConfigurationError(
                f"Variable {VARIABLES['beam_args']!r} must be a JSON list of strings such as "
                '["--project=P", "--region=europe-west1"]') from None
    if beam_args is not None and not (isinstance(beam_args, list)
                                      and all(isinstance(a, str) for a in beam_args)):
        raise ConfigurationError(f"beam_args must be a list of strings, got {beam_args!r}")
    s["beam_args"], sources["beam_args"] = beam_args or [], src or "default"
    if s["lookback_days"] < 1:
        raise ConfigurationError("lookback_days must be at least 1")
    channel, src = pick("slack_channel")
    if channel is None:
        conn = _connection(SLACK_CONN_ID)
        channel = (conn.extra_dejson or {}).get("channel") if conn else None
        src = "connection" if channel else None
    if channel is None and os.environ.get("MAILPULSE_SLACK_CHANNEL"):
        channel, src = os.environ["MAILPULSE_SLACK_CHANNEL"], "environment"
    s["slack_channel"], sources["slack_channel"] = channel, src or "unset"
    s["window_start"] = (logical_day - _td(days=s["lookback_days"] - 1)).isoformat()
    s["window_end"] = logical_day.isoformat()
    s["sources"] = sources
    return s


def _hasher(warehouse: str):
    """The email hasher: env MAILPULSE_HASH_KEY, else the Variable mailpulse_hash_secret;
    the development key only on the embedded default."""
    import os

    from pipelines.hashing import HASH_KEY_ENV, EmailHasher, resolve_key
    environ = {HASH_KEY_ENV: os.environ.get(HASH_KEY_ENV) or _variable("hash_key") or ""}
    return EmailHasher(resolve_key(environ, embedded=warehouse.startswith("duckdb:")))


def _slack_credentials() -> tuple[str | None, str | None]:
    """(token, api base url): the mailpulse_slack Connection, else the environment."""
    import os
    conn = _connection(SLACK_CONN_ID)
    token = (conn.password if conn else None) or os.environ.get("SLACK_BOT_TOKEN") or None
    base = (conn.extra_dejson or {}).get("api_url") if conn is not None else None
    return token, base or os.environ.get("MAILPULSE_SLACK_API_URL") or None


@dag(
    dag_id=DAG_ID,
    description="Load a day of provider archives, recompute delivery outcomes, alert on bounce/complaint rates",
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
        from pipelines.analysis import ConfigurationError
        ctx = get_current_context()
        try:
            settings = resolve_settings_for(dict(ctx["params"]), ctx["logical_date"].date())
        except ConfigurationError as exc:  # retrying cannot fix a setting
            raise AirflowFailException(str(exc)) from exc
        import logging
        logging.getLogger(__name__).info("settings for %s: %s", DAG_ID, settings)
        return settings

    @task(execution_timeout=timedelta(hours=4))
    def load_archive(settings: dict) -> dict:
        from datetime import date

        from pipelines.load import NormalizeConfig, run_load
        report = run_load(settings["archive"], date.fromisoformat(settings["logical_date"]),
                          settings["warehouse"],
                          config=NormalizeConfig(hasher=_hasher(settings["warehouse"])),
                          runner=settings["runner"], beam_args=settings["beam_args"])
        result = report.as_dict()
        if not report.adds_up():
            raise RuntimeError(f"load counts do not add up (a bug; nothing to rerun): {result}")
        return result

    @task(execution_timeout=timedelta(hours=1))
    def recompute_outcomes(settings: dict, load: dict) -> dict:
        from datetime import date

        from pipelines.analysis import jsonable
        from pipelines.outcomes import compute_outcomes
        result = compute_outcomes(settings["warehouse"], date.fromisoformat(settings["window_start"]),
                                  date.fromisoformat(settings["window_end"]))
        return {"window_start": settings["window_start"], "window_end": settings["window_end"],
                "events_loaded": load.get("events_loaded"), "result": jsonable(result)}

    @task
    def check_rates(settings: dict, outcomes: dict) -> list[dict]:
        from datetime import date

        from pipelines.analysis import ConfigurationError, Thresholds, rate_breaches
        day = date.fromisoformat(settings["logical_date"])
        try:
            thresholds = Thresholds(bounce_rate=settings["bounce_rate_threshold"],
                                    spam_report_rate=settings["spam_report_rate_threshold"],
                                    min_volume=settings["min_volume"])
        except ConfigurationError as exc:
            raise AirflowFailException(str(exc)) from exc
        return [b.as_dict() for b in rate_breaches(settings["warehouse"], day, thresholds)]

    @task
    def notify_slack(settings: dict, breaches: list[dict]) -> dict:
        from pipelines.analysis import ConfigurationError, post_rate_alert
        token, api_url = _slack_credentials()
        try:
            return post_rate_alert(breaches, day=settings["logical_date"], token=token,
                                   channel=settings["slack_channel"], api_url=api_url,
                                   warehouse=settings["warehouse"])
        except ConfigurationError as exc:
            raise AirflowFailException(str(exc)) from exc

    settings = resolve_settings()
    loaded = load_archive(settings)
    outcomes = recompute_outcomes(settings, loaded)
    breaches = check_rates(settings, outcomes)
    notify_slack(settings, breaches)


mailpulse_daily()
