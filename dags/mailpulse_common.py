"""Shared by the mailpulse DAGs (mailpulse_daily, mailpulse_intraday): the run's settings
(resolved from params, Variables, Connections and the environment, then turned into one
:class:`pipelines.settings.Settings` by each task that loads), Slack credentials and the
failure callback.

Parsing does no I/O: Variables, Connections, the warehouse and the archive are read only
when a task runs, and the ``pipelines`` package is imported inside the functions. This
file holds no DAG (it is listed in .airflowignore); the DAG files import it (Airflow puts
the DAGs folder on ``sys.path``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Airflow Variables the DAGs read (each may be overridden per run by the param of the
#: same name without the prefix). Names that contain "secret" are masked in logs.
VARIABLES = {
    "warehouse": "mailpulse_warehouse",
    "archive": "mailpulse_archive",
    "runner": "mailpulse_runner",
    "beam_args": "mailpulse_beam_args",
    "window_days": "mailpulse_window_days",
    "days": "mailpulse_intraday_days",
    "bounce_rate_threshold": "mailpulse_bounce_rate_threshold",
    "spam_report_rate_threshold": "mailpulse_spam_report_rate_threshold",
    "min_volume": "mailpulse_min_volume",
    "alert_mode": "mailpulse_alert_mode",
    "slack_channel": "mailpulse_slack_channel",
    "ses_category_tag": "mailpulse_ses_category_tag",
    "cmc_timezone": "mailpulse_cmc_timezone",
    "cmc_category_field": "mailpulse_cmc_category_field",
    "max_record_bytes": "mailpulse_max_record_bytes",
    "hash_key": "mailpulse_hash_secret",
}
#: How the load reads provider records (``mailpulse load --ses-category-tag`` ...): a run
#: param or the Variable of the same name; unset: pipelines.settings' defaults.
NORMALIZE_SETTINGS = ("ses_category_tag", "cmc_timezone", "cmc_category_field", "max_record_bytes")
#: Old Variable names still read (with a warning) when the new one is not set.
RENAMED_VARIABLES = {"window_days": "mailpulse_lookback_days"}
#: Connections the DAGs read when they exist.
WAREHOUSE_CONN_ID = "mailpulse_warehouse"
SLACK_CONN_ID = "mailpulse_slack"

#: What applies when neither the run, a Variable nor a Connection says otherwise.
#: ``None``: the package's own default, looked up when the task runs
#: (window_days: pipelines.outcomes.WINDOW_DAYS; days: pipelines.settings.DEFAULT_DAYS).
DEFAULTS = {
    "runner": "DirectRunner",
    "beam_args": [],
    "window_days": None,
    "days": None,
    # bounces / requests per category and day (delivery_outcomes.bounce_rate; blocks
    # are counted apart, as in SendGrid's stats).
    "bounce_rate_threshold": 0.05,
    # Share of delivered mail reported as spam; Gmail and Yahoo require bulk senders to
    # stay below 0.3 %.
    "spam_report_rate_threshold": 0.003,
    # Categories with fewer requests (messages x recipients sent) that day are not checked.
    "min_volume": 100,
    # "baseline": each category against its own last 28 days (median + spread), the fixed
    # thresholds only for categories without enough history; "fixed": the thresholds.
    "alert_mode": "baseline",
}


def normalize_params() -> dict:
    """The run params that say how the load reads provider records (both DAGs), the same
    settings as ``mailpulse load``'s flags."""
    from airflow.sdk import Param

    return {
        "ses_category_tag": Param(
            None,
            type=["null", "string"],
            description="SES mail tag whose values are the categories (default: category)",
        ),
        "cmc_timezone": Param(
            None,
            type=["null", "string"],
            description="time zone of Customers Mail Cloud 'created' times (default: Asia/Tokyo)",
        ),
        "cmc_category_field": Param(
            None,
            type=["null", "string"],
            description="CMC record field whose value becomes the category, e.g. apiData "
            "(default: none)",
        ),
        "max_record_bytes": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="a longer record becomes a dead letter unread (default: 10485760)",
        ),
    }


def _variable(name: str):
    from airflow.sdk import Variable

    value = Variable.get(VARIABLES[name], default=None)
    if value in (None, "") and name in RENAMED_VARIABLES:
        value = Variable.get(RENAMED_VARIABLES[name], default=None)
        if value not in (None, ""):
            log.warning(
                "Variable %s is deprecated: rename it %s", RENAMED_VARIABLES[name], VARIABLES[name]
            )
    return value


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
        'extra {"path": "/abs/file.duckdb"}, or any type with extra {"uri": "..."}'
    )


def interval_days(start, end) -> list:
    """The UTC dates a data interval covers: [start, end) -> start.date() ..
    (end - 1 microsecond).date(); a daily interval is one day."""
    from datetime import timedelta as _td

    first = start.date()
    last = (end - _td(microseconds=1)).date() if end > start else first
    return [first + _td(days=i) for i in range((last - first).days + 1)]


def resolve_settings_for(
    params: dict, interval_start, interval_end, *, logical_date=None, rates: bool = True
) -> dict:
    """The run's configuration: run params, then Variables, then Connections and the
    environment, then :data:`DEFAULTS` and the embedded warehouse (no secrets). The days
    come from the run's data interval (a scheduled daily run: the day that just ended; a
    manual run: the interval that ends at its run time, i.e. the last complete day)."""
    import json
    import os

    from pipelines.analysis import ConfigurationError
    from pipelines.config import default_archive, default_warehouse_uri
    from pipelines.errors import UsageError
    from pipelines.outcomes import WINDOW_DAYS, window_ending
    from pipelines.settings import DEFAULT_DAYS, Settings

    def pick(name):
        """(value, where it came from) from the run's params or the Variable."""
        if params.get(name) not in (None, ""):
            return params[name], "param"
        value = _variable(name)
        if value not in (None, ""):
            return value, "variable"
        return None, None

    days = interval_days(interval_start, interval_end)
    s: dict = {
        "data_interval_start": interval_start.isoformat(),
        "data_interval_end": interval_end.isoformat(),
        "interval_days": [d.isoformat() for d in days],
        "day": days[-1].isoformat(),
    }
    if logical_date is not None:
        s["logical_date"] = logical_date.isoformat()
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
    specs = []
    if archive is None and os.environ.get("MAILPULSE_ARCHIVE"):
        archive, src = os.environ["MAILPULSE_ARCHIVE"], "environment"
    if archive is None and os.environ.get("MAILPULSE_SOURCES", "").strip():
        specs, src = os.environ["MAILPULSE_SOURCES"].split(), "environment"
    if archive is None and not specs:
        archive, src = default_archive(), "default"
    s["archive"], s["source_specs"], sources["archive"] = archive, specs, src
    casts = [("runner", str), ("window_days", int), ("days", int)]
    if rates:
        casts += [
            ("bounce_rate_threshold", float),
            ("spam_report_rate_threshold", float),
            ("min_volume", int),
            ("alert_mode", str),
        ]
    package_defaults = {"window_days": WINDOW_DAYS, "days": DEFAULT_DAYS}
    for name, cast in casts:
        value, src = pick(name)
        if value is None:
            value, src = DEFAULTS[name], "default"
            if value is None:
                value = package_defaults[name]
        try:
            s[name] = cast(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{name} = {value!r} (from the {src}) is not a valid {cast.__name__}; fix the "
                f"run param {name!r} or the Variable {VARIABLES[name]!r}"
            ) from None
        sources[name] = src
    beam_args, src = pick("beam_args")
    if isinstance(beam_args, str):
        try:
            beam_args = json.loads(beam_args)
        except ValueError:
            raise ConfigurationError(
                f"Variable {VARIABLES['beam_args']!r} must be a JSON list of strings such as "
                '["--project=P", "--region=europe-west1"]'
            ) from None
    if beam_args is not None and not (
        isinstance(beam_args, list) and all(isinstance(a, str) for a in beam_args)
    ):
        raise ConfigurationError(f"beam_args must be a list of strings, got {beam_args!r}")
    s["beam_args"], sources["beam_args"] = beam_args or [], src or "default"
    for name in ("window_days", "days"):
        if s[name] < 1:
            raise ConfigurationError(
                f"{name} must be at least 1 (run param {name!r} or Variable {VARIABLES[name]!r})"
            )
    if rates and s["alert_mode"] not in ("baseline", "fixed"):
        raise ConfigurationError(
            f"alert_mode {s['alert_mode']!r} must be 'baseline' or 'fixed' "
            f"(run param 'alert_mode' or Variable {VARIABLES['alert_mode']!r})"
        )
    for name in NORMALIZE_SETTINGS:
        value, src = pick(name)
        s[name], sources[name] = value, src or "default"
    try:  # every setting the load uses checked now, in the first task (the key is not read)
        Settings.from_params(s, os.environ, hash_key=False)
    except UsageError as exc:
        raise ConfigurationError(
            f"{exc}; set it in the run's conf or its Airflow Variable "
            "(VARIABLES in dags/mailpulse_common.py)"
        ) from None
    s["slack_channel"], sources["slack_channel"] = slack_channel(params)
    # the window: window_days partitions ending at the interval's last day, and at least
    # every day of the interval
    s["window_start"] = min(days[0], window_ending(days[-1], s["window_days"])[0]).isoformat()
    s["window_end"] = days[-1].isoformat()
    s["sources"] = sources
    return s


def slack_channel(params: dict | None = None) -> tuple[str | None, str]:
    """(channel, where it came from): run param, Variable, the Slack connection's extra
    ``channel``, env MAILPULSE_SLACK_CHANNEL."""
    import os

    params = params or {}
    if params.get("slack_channel"):
        return params["slack_channel"], "param"
    value = _variable("slack_channel")
    if value:
        return value, "variable"
    conn = _connection(SLACK_CONN_ID)
    channel = (conn.extra_dejson or {}).get("channel") if conn else None
    if channel:
        return channel, "connection"
    if os.environ.get("MAILPULSE_SLACK_CHANNEL"):
        return os.environ["MAILPULSE_SLACK_CHANNEL"], "environment"
    return None, "unset"


def settings_for(resolved: dict):
    """The :class:`pipelines.settings.Settings` of a run, from the settings the first task
    resolved (:func:`resolve_settings_for`) and the environment; the hash key from env
    MAILPULSE_HASH_KEY, else the Variable mailpulse_hash_secret (the development key only
    on the embedded default). A missing key is a UsageError naming both."""
    import os

    from pipelines.hashing import HASH_KEY_ENV
    from pipelines.settings import Settings

    environ = dict(os.environ)
    if not environ.get(HASH_KEY_ENV):
        environ[HASH_KEY_ENV] = _variable("hash_key") or ""
    return Settings.from_params(resolved, environ)


def slack_credentials() -> tuple[str | None, str | None]:
    """(token, api base url): the mailpulse_slack Connection, else the environment."""
    import os

    conn = _connection(SLACK_CONN_ID)
    token = (conn.password if conn else None) or os.environ.get("SLACK_BOT_TOKEN") or None
    base = (conn.extra_dejson or {}).get("api_url") if conn is not None else None
    return token, base or os.environ.get("MAILPULSE_SLACK_API_URL") or None


def notify_failure(context) -> None:
    """Task failure callback (after the task's retries): one Slack message naming the
    DAG, the task, the data interval, the error and where the log is; logged at ERROR
    when no Slack token is configured. A callback never raises (Airflow would only log
    it): a Slack failure is logged too."""
    try:
        from pipelines.analysis import post_failure_alert

        ti = context.get("task_instance") or context.get("ti")
        dag_run = context.get("dag_run")
        exc = context.get("exception")
        params = dict(context.get("params") or {})
        token, api_url = slack_credentials()
        channel, _ = slack_channel(params)
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        days = interval_days(start, end) if start is not None and end is not None else []
        result = post_failure_alert(
            dag_id=getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?"),
            task_id=getattr(ti, "task_id", "?"),
            run_id=getattr(ti, "run_id", None) or getattr(dag_run, "run_id", ""),
            days=[d.isoformat() for d in days],
            error=f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error",
            try_number=getattr(ti, "try_number", None),
            log_url=getattr(ti, "log_url", None),
            token=token,
            channel=channel,
            api_url=api_url,
        )
        log.info("failure alert: %s", {k: v for k, v in result.items() if k != "text"})
    except Exception:  # a callback must never raise; say what went wrong
        log.exception("the failure callback could not post the alert")
