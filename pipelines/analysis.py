"""What the analyst notebooks and the daily DAG compute from the warehouse.

Notebook cells call these functions and plot what they return; no SQL or arithmetic is
copied into cells. Every function takes a warehouse (a URI such as
``duckdb:///path/file.duckdb`` / ``bigquery://PROJECT/DATASET``, or a warehouse object),
and every query is BigQuery SQL with ``@name`` parameters, so the same notebook runs on
the embedded default and on BigQuery.

Rates are those of ``delivery_outcomes`` (queries/delivery_outcomes/metadata.yaml),
recomputed from summed counts when rows are added up over providers or days:

- ``delivered_rate``, ``bounce_rate``, ``block_rate``, ``deferred_rate``, ``drop_rate``
  divide by ``requests`` (bounces exclude blocks, as in SendGrid's stats);
- ``spam_report_rate``, ``open_rate``, ``click_rate``, ``unsubscribe_rate`` divide by
  ``delivered``; ``click_to_open_rate`` by ``unique_opens``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Iterable

import pandas as pd

from .outcomes import COUNT_COLUMNS as _OUTCOME_COUNT_COLUMNS

log = logging.getLogger(__name__)

WAREHOUSE_ENV = "MAILPULSE_WAREHOUSE"

#: Count columns of delivery_outcomes that add up across providers (rates do not:
#: they are recomputed from the sums); defined once, with the table, in pipelines.outcomes.
COUNT_COLUMNS = _OUTCOME_COUNT_COLUMNS
#: rate -> (numerator, denominator), as delivery_outcomes defines them.
RATES = {
    "delivered_rate": ("delivered", "requests"),
    "bounce_rate": ("bounces", "requests"),
    "block_rate": ("blocks", "requests"),
    "deferred_rate": ("deferred", "requests"),
    "drop_rate": ("drops", "requests"),
    "open_rate": ("unique_opens", "delivered"),
    "click_rate": ("unique_clicks", "delivered"),
    "click_to_open_rate": ("unique_clicks", "unique_opens"),
    "spam_report_rate": ("spam_reports", "delivered"),
    "unsubscribe_rate": ("unsubscribes", "delivered"),
}
#: Outcomes stacked in the "what happened to the mail" plots, in settling order.
STACKED_OUTCOMES = ("delivered", "deferred", "bounces", "blocks", "drops")


class ConfigurationError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


# -- the configured warehouse -----------------------------------------------------------


def warehouse_uri(environ=None) -> str:
    """``$MAILPULSE_WAREHOUSE`` or the embedded default (``$MAILPULSE_DATA_DIR``)."""
    from .config import default_warehouse_uri

    environ = os.environ if environ is None else environ
    return environ.get(WAREHOUSE_ENV) or default_warehouse_uri(environ)


def open_configured(warehouse=None):
    """The warehouse object for ``warehouse`` (a URI or object) or the configured one."""
    from .warehouse import open_warehouse

    return open_warehouse(warehouse or warehouse_uri())


def jsonable(value: Any) -> Any:
    """Dates, dataclasses, numpy scalars and DataFrames -> plain JSON values (for XCom)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return jsonable(value.to_dict(orient="records"))
    if hasattr(value, "as_dict"):
        return jsonable(value.as_dict())
    if hasattr(value, "__dataclass_fields__"):
        return jsonable(asdict(value))
    if hasattr(value, "item"):  # numpy scalar
        return jsonable(value.item())
    return str(value)


# -- outcomes per category and day -------------------------------------------------------


def _read_outcomes(warehouse, start: date, end: date) -> pd.DataFrame:
    from .outcomes import read_outcomes

    return read_outcomes(open_configured(warehouse), start, end)


def add_rates(df: pd.DataFrame) -> pd.DataFrame:
    """(Re)computes every rate of :data:`RATES` from the counts in ``df`` (NaN where
    the divisor is 0 or a count column is missing)."""
    out = df.copy()
    for rate, (num, den) in RATES.items():
        if num in out.columns and den in out.columns:
            d = out[den].astype("float64")
            out[rate] = (out[num].astype("float64") / d.where(d > 0)).astype("float64")
        else:
            out[rate] = float("nan")
    return out


def category_daily(outcomes: pd.DataFrame, categories: Iterable[str] | None = None) -> pd.DataFrame:
    """delivery_outcomes rows summed over providers: one row per (event_date, category)
    with the counts and the rates recomputed from them."""
    df = outcomes
    if categories is not None:
        df = df[df["category"].isin(list(categories))]
    counts = [c for c in COUNT_COLUMNS if c in df.columns]
    if df.empty:
        grouped = pd.DataFrame(columns=["event_date", "category", *counts])
    else:
        grouped = df.groupby(["event_date", "category"], as_index=False, dropna=False)[counts].sum()
    for c in counts:
        grouped[c] = grouped[c].astype("int64")
    grouped["event_date"] = pd.to_datetime(grouped["event_date"])
    return add_rates(grouped).sort_values(["event_date", "category"]).reset_index(drop=True)


# -- thresholds and alerts ------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Alert when a category's rate on a day is above these. ``min_volume``: categories
    with fewer ``requests`` that day are not checked (a few bounces out of ten messages
    are noise, not a trend)."""

    bounce_rate: float = 0.05
    spam_report_rate: float = 0.003
    min_volume: int = 100

    def __post_init__(self):
        for name in ("bounce_rate", "spam_report_rate"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigurationError(f"{name} threshold {v!r} must be a number between 0 and 1")
        if not isinstance(self.min_volume, int) or self.min_volume < 0:
            raise ConfigurationError(f"min_volume {self.min_volume!r} must be a whole number >= 0")


#: metric checked -> what it means, for the alert text.
CHECKED_METRICS = {
    "bounce_rate": "bounce rate (bounces / requests)",
    "spam_report_rate": "spam-report rate (spam reports / delivered)",
}


@dataclass(frozen=True)
class Breach:
    event_date: str
    category: str
    metric: str  # a key of CHECKED_METRICS
    value: float
    threshold: float
    numerator: int
    denominator: int
    requests: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"*{self.category}*: {CHECKED_METRICS[self.metric]} {self.value:.2%} > "
            f"{self.threshold:.2%} ({self.numerator:,} of {self.denominator:,}; "
            f"{self.requests:,} requests)"
        )


def find_breaches(daily: pd.DataFrame, thresholds: Thresholds) -> list[Breach]:
    """Rows of :func:`category_daily` whose bounce or spam-report rate exceeds its
    threshold, among categories with at least ``min_volume`` requests that day (and at
    least one). Sorted by date, category, metric."""
    out: list[Breach] = []
    limits = {
        "bounce_rate": thresholds.bounce_rate,
        "spam_report_rate": thresholds.spam_report_rate,
    }
    for row in daily.to_dict(orient="records"):
        requests = int(row.get("requests", 0))
        if requests < max(thresholds.min_volume, 1):
            continue
        for metric, limit in limits.items():
            num_col, den_col = RATES[metric]
            num, den = int(row.get(num_col, 0)), int(row.get(den_col, 0))
            if den and num / den > limit:
                out.append(
                    Breach(
                        pd.Timestamp(row["event_date"]).date().isoformat(),
                        str(row["category"]),
                        metric,
                        num / den,
                        limit,
                        num,
                        den,
                        requests,
                    )
                )
    return sorted(out, key=lambda b: (b.event_date, b.category, b.metric))


def rate_breaches(warehouse, day: date, thresholds: Thresholds) -> list[Breach]:
    """Breaches on ``day`` per category (summed over providers) in delivery_outcomes."""
    return find_breaches(category_daily(_read_outcomes(warehouse, day, day)), thresholds)


# -- alerts against each category's own baseline ---------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Alert when a category's rate on a day stands out from its OWN trailing behaviour:
    above ``median + spread x max(scaled MAD, min_spread)`` of its last ``days`` days
    (days with at least ``min_volume`` requests), and at least ``min_increase`` above the
    median. A category with fewer than ``min_history`` such days falls back to the fixed
    ``fallback`` thresholds. So a category that always bounces 6 % is quiet at 6 % and
    one that bounces 1 % alerts at 4 %.

    The scaled MAD (1.4826 x median absolute deviation) is a spread robust to the very
    spikes it looks for; ``min_spread`` keeps a perfectly flat history from alerting on
    noise."""

    days: int = 28
    min_volume: int = 100
    spread: float = 4.0
    min_spread: dict = None  # metric -> absolute rate; default in __post_init__
    min_increase: dict = None  # metric -> absolute rate above the median
    min_history: int = 7
    fallback: Thresholds = Thresholds()

    def __post_init__(self):
        if self.min_spread is None:
            object.__setattr__(
                self, "min_spread", {"bounce_rate": 0.005, "spam_report_rate": 0.0005}
            )
        if self.min_increase is None:
            object.__setattr__(
                self, "min_increase", {"bounce_rate": 0.01, "spam_report_rate": 0.001}
            )
        for name in ("days", "min_volume", "min_history"):
            v = getattr(self, name)
            if (
                not isinstance(v, int)
                or isinstance(v, bool)
                or v < (1 if name != "min_volume" else 0)
            ):
                raise ConfigurationError(f"baseline {name} {v!r} must be a whole number >= 1")
        if not isinstance(self.spread, (int, float)) or self.spread <= 0:
            raise ConfigurationError(f"baseline spread {self.spread!r} must be a number > 0")


#: How alerts are decided: against each category's own baseline (default) or fixed
#: thresholds (the option).
ALERT_MODES = ("baseline", "fixed")


def baseline_breaches(
    daily: pd.DataFrame, day: date, baseline: Baseline = Baseline()
) -> list[Breach]:
    """Breaches on ``day`` per category of :func:`category_daily` rows that hold ``day``
    and the ``baseline.days`` days before it. ``Breach.threshold`` is the limit the rate
    crossed (the baseline's, or the fixed fallback's)."""
    if daily.empty:
        return []
    df = daily.copy()
    df["event_date"] = pd.to_datetime(df["event_date"]).dt.date
    first = day - timedelta(days=baseline.days)
    out: list[Breach] = []
    for category, rows in df.groupby("category", sort=True):
        today = rows[rows["event_date"] == day]
        if today.empty:
            continue
        row = today.iloc[0]
        requests = int(row["requests"])
        if requests < max(baseline.min_volume, 1):
            continue
        hist = rows[
            (rows["event_date"] >= first)
            & (rows["event_date"] < day)
            & (rows["requests"] >= max(baseline.min_volume, 1))
        ]
        for metric in CHECKED_METRICS:
            num_col, den_col = RATES[metric]
            num, den = int(row[num_col]), int(row[den_col])
            if not den:
                continue
            value = num / den
            rates = (hist[num_col] / hist[den_col].where(hist[den_col] > 0)).dropna()
            if len(rates) >= baseline.min_history:
                median = float(rates.median())
                mad = 1.4826 * float((rates - median).abs().median())
                limit = median + max(
                    baseline.spread * max(mad, baseline.min_spread[metric]),
                    baseline.min_increase[metric],
                )
            else:
                limit = getattr(baseline.fallback, metric)
            if value > limit:
                out.append(
                    Breach(day.isoformat(), str(category), metric, value, limit, num, den, requests)
                )
    return sorted(out, key=lambda b: (b.event_date, b.category, b.metric))


def baseline_rate_breaches(warehouse, day: date, baseline: Baseline = Baseline()) -> list[Breach]:
    """:func:`baseline_breaches` on ``delivery_outcomes`` (day and its trailing days)."""
    daily = category_daily(_read_outcomes(warehouse, day - timedelta(days=baseline.days), day))
    return baseline_breaches(daily, day, baseline)


def format_alert(
    breaches: list[dict] | list[Breach], day: str, warehouse: str = "", mode: str = "fixed"
) -> str:
    """The alert text: one line per breach, then where the numbers come from."""
    items = [b if isinstance(b, Breach) else Breach(**b) for b in breaches]
    lines = [
        f":rotating_light: mailpulse: {len(items)} rate alert(s) for {day}"
        + (" (each category against its own last 28 days)" if mode == "baseline" else "")
    ]
    lines += [f"• {b.describe()}" for b in items]
    if warehouse:
        lines.append(f"from delivery_outcomes in {warehouse}")
    return "\n".join(lines)


class AlertNotPosted(RuntimeError):
    """Slack refused or could not be reached; the message says why (retry or fix)."""


def format_empty_alert(days: list[str], warehouse: str = "", where: str = "") -> str:
    """The alert for days with no event at all in the warehouse."""
    span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    lines = [
        f":warning: mailpulse: no events at all for {span}"
        + (f" in {warehouse}" if warehouse else ""),
        "Is the collector (`mailpulse serve`) or the SES queue drain running, and is the "
        "archive the DAG reads the one they write to?" + (f" (read: {where})" if where else ""),
    ]
    return "\n".join(lines)


def _slack_notifier(token: str, channel: str | None, api_url: str | None):
    from .slack import DEFAULT_API_URL, SlackConfig, SlackNotifier

    if not channel:
        raise ConfigurationError(
            "a Slack token is configured but no channel: set MAILPULSE_SLACK_CHANNEL, the "
            "Variable mailpulse_slack_channel or the run param slack_channel"
        )
    url = api_url or DEFAULT_API_URL
    return SlackNotifier(
        SlackConfig(token=token, channel=channel, api_url=url if url.endswith("/") else url + "/")
    )


def _post(
    text: str,
    *,
    token: str | None,
    channel: str | None,
    api_url: str | None,
    what: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Post ``text`` (or log it at WARNING without a token); raises AlertNotPosted."""
    if not token:
        log.warning(
            "%s\n(not posted: no Slack token; set SLACK_BOT_TOKEN or the password "
            "of the mailpulse_slack connection)",
            text,
        )
        return {"posted": False, "reason": "no Slack token", **extra, "text": text}
    errors: list[str] = []
    posted = _slack_notifier(token, channel, api_url).post_message(text, errors=errors)
    if posted is None:
        raise AlertNotPosted("; ".join(errors) or f"Slack did not accept the {what}")
    return {"posted": True, "channel": posted["channel"], "ts": posted["ts"], **extra, "text": text}


def post_rate_alert(
    breaches: list[dict],
    *,
    day: str,
    token: str | None,
    channel: str | None,
    api_url: str | None = None,
    warehouse: str = "",
    empty_days: list[str] | None = None,
    where: str = "",
    mode: str = "fixed",
) -> dict[str, Any]:
    """Posts one Slack message listing ``breaches`` and/or the ``empty_days`` (days with
    no event at all) through :mod:`pipelines.slack` (nothing when there are none).
    Without a token the alert is logged at WARNING instead. Raises
    :class:`AlertNotPosted` when Slack fails, so a scheduler retries."""
    empty_days = list(empty_days or [])
    if not breaches and not empty_days:
        log.info("no rate above its threshold on %s; nothing to post", day)
        return {"posted": False, "reason": "no breaches", "breaches": 0}
    parts = []
    if empty_days:
        parts.append(format_empty_alert(empty_days, warehouse, where))
    if breaches:
        parts.append(format_alert(breaches, day, warehouse, mode))
    return _post(
        "\n\n".join(parts),
        token=token,
        channel=channel,
        api_url=api_url,
        what="alert",
        extra={"breaches": len(breaches), "empty_days": empty_days},
    )


def post_failure_alert(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    days: list[str],
    error: str,
    try_number: int | None = None,
    log_url: str | None = None,
    token: str | None,
    channel: str | None,
    api_url: str | None = None,
) -> dict[str, Any]:
    """A failed DAG task, in one Slack message (logged without a token): what failed,
    for which days, the error, and where to look and what to do."""
    span = (days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}") if days else "?"
    lines = [
        f":x: mailpulse: {dag_id}.{task_id} failed for {span}"
        + (f" (try {try_number})" if try_number else ""),
        f"error: {_trunc_text(error, 1500)}",
        f"run: {run_id}",
    ]
    if log_url:
        lines.append(f"log: {log_url}")
    lines.append(
        "Fix the cause, then clear the task in the Airflow UI (or `airflow tasks "
        f"clear {dag_id} -t {task_id} -d`); every task is safe to rerun."
    )
    return _post(
        "\n".join(lines),
        token=token,
        channel=channel,
        api_url=api_url,
        what="failure alert",
        extra={"dag_id": dag_id, "task_id": task_id},
    )


def _trunc_text(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- windows ---------------------------------------------------------------------------


def resolve_window(
    warehouse, start: date | None, end: date | None, *, days: int = 30, table: str = "events"
) -> tuple[date, date]:
    """[start, end]; a missing end is the latest ``event_date`` in ``table``, a missing
    start ``days - 1`` days before end (or the earliest date in ``table`` if later)."""
    if isinstance(start, str):
        start = date.fromisoformat(start)
    if isinstance(end, str):
        end = date.fromisoformat(end)
    if end is None or start is None:
        wh = open_configured(warehouse)
        row = wh.query(
            f"SELECT MIN(event_date) AS lo, MAX(event_date) AS hi FROM {table}"
        ).to_pylist()[0]
        if row["hi"] is None:
            raise ConfigurationError(
                f"{table} in {wh.uri} is empty: load a day first (`mailpulse load`), compute "
                "outcomes (`mailpulse outcomes`), or set START and END in the parameters cell"
            )
        end = end or row["hi"]
        start = start or max(row["lo"], end - timedelta(days=days - 1))
    if start > end:
        raise ConfigurationError(f"START {start} is after END {end}")
    return start, end


def _category_filter(category: str | None, column: str = "categories") -> str:
    """A fixed SQL fragment (the value itself is the @category parameter)."""
    return f" AND @category IN UNNEST({column})" if category else ""


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
