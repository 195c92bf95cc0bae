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

log = logging.getLogger(__name__)

WAREHOUSE_ENV = "MAILPULSE_WAREHOUSE"

#: Count columns of delivery_outcomes that add up across providers (rates do not:
#: they are recomputed from the sums).
COUNT_COLUMNS = (
    "requests", "processed", "delivered", "bounces", "bounces_hard", "bounces_soft",
    "bounces_undetermined", "blocks", "deferred", "drops", "bounce_drops",
    "spam_report_drops", "unsubscribe_drops", "invalid_emails", "opens", "unique_opens",
    "clicks", "unique_clicks", "spam_reports", "unsubscribes",
)
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
        grouped = (df.groupby(["event_date", "category"], as_index=False, dropna=False)[counts]
                   .sum())
    for c in counts:
        grouped[c] = grouped[c].astype("int64")
    grouped["event_date"] = pd.to_datetime(grouped["event_date"])
    return add_rates(grouped).sort_values(["event_date", "category"]).reset_index(drop=True)


def delivery_health(warehouse=None, start: date | None = None, end: date | None = None,
                    categories: Iterable[str] | None = None) -> pd.DataFrame:
    """Per day and category: counts and rates over [start, end] (default: the last 30
    days that have outcomes)."""
    wh = open_configured(warehouse)
    start, end = resolve_window(wh, start, end, table="delivery_outcomes")
    return category_daily(_read_outcomes(wh, start, end), categories)


def top_categories(daily: pd.DataFrame, n: int = 6, by: str = "requests") -> list[str]:
    """The ``n`` categories with the most ``by`` over the frame."""
    if daily.empty:
        return []
    return (daily.groupby("category")[by].sum().sort_values(ascending=False)
            .head(n).index.tolist())


def rate_table(daily: pd.DataFrame, rate: str, categories: Iterable[str] | None = None) -> pd.DataFrame:
    """``rate`` as a date x category table (for line plots)."""
    df = daily if categories is None else daily[daily["category"].isin(list(categories))]
    return df.pivot_table(index="event_date", columns="category", values=rate, aggfunc="first")


def stacked_outcomes(daily: pd.DataFrame, category: str | None = None) -> pd.DataFrame:
    """Per day: how many messages ended in each outcome (for a stacked bar plot)."""
    df = daily if category is None else daily[daily["category"] == category]
    cols = [c for c in STACKED_OUTCOMES if c in df.columns]
    return df.groupby("event_date")[cols].sum()


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
    metric: str        # a key of CHECKED_METRICS
    value: float
    threshold: float
    numerator: int
    denominator: int
    requests: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"*{self.category}*: {CHECKED_METRICS[self.metric]} {self.value:.2%} > "
                f"{self.threshold:.2%} ({self.numerator:,} of {self.denominator:,}; "
                f"{self.requests:,} requests)")


def find_breaches(daily: pd.DataFrame, thresholds: Thresholds) -> list[Breach]:
    """Rows of :func:`category_daily` whose bounce or spam-report rate exceeds its
    threshold, among categories with at least ``min_volume`` requests that day (and at
    least one). Sorted by date, category, metric."""
    out: list[Breach] = []
    limits = {"bounce_rate": thresholds.bounce_rate,
              "spam_report_rate": thresholds.spam_report_rate}
    for row in daily.to_dict(orient="records"):
        requests = int(row.get("requests", 0))
        if requests < max(thresholds.min_volume, 1):
            continue
        for metric, limit in limits.items():
            num_col, den_col = RATES[metric]
            num, den = int(row.get(num_col, 0)), int(row.get(den_col, 0))
            if den and num / den > limit:
                out.append(Breach(pd.Timestamp(row["event_date"]).date().isoformat(),
                                  str(row["category"]), metric, num / den, limit, num, den,
                                  requests))
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
            object.__setattr__(self, "min_spread", {"bounce_rate": 0.005,
                                                    "spam_report_rate": 0.0005})
        if self.min_increase is None:
            object.__setattr__(self, "min_increase", {"bounce_rate": 0.01,
                                                      "spam_report_rate": 0.001})
        for name in ("days", "min_volume", "min_history"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name != "min_volume" else 0):
                raise ConfigurationError(f"baseline {name} {v!r} must be a whole number >= 1")
        if not isinstance(self.spread, (int, float)) or self.spread <= 0:
            raise ConfigurationError(f"baseline spread {self.spread!r} must be a number > 0")


#: How alerts are decided: against each category's own baseline (default) or fixed
#: thresholds (the option).
ALERT_MODES = ("baseline", "fixed")


def baseline_breaches(daily: pd.DataFrame, day: date, baseline: Baseline = Baseline()) -> list[Breach]:
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
        hist = rows[(rows["event_date"] >= first) & (rows["event_date"] < day)
                    & (rows["requests"] >= max(baseline.min_volume, 1))]
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
                limit = median + max(baseline.spread * max(mad, baseline.min_spread[metric]),
                                     baseline.min_increase[metric])
            else:
                limit = getattr(baseline.fallback, metric)
            if value > limit:
                out.append(Breach(day.isoformat(), str(category), metric, value, limit, num,
                                  den, requests))
    return sorted(out, key=lambda b: (b.event_date, b.category, b.metric))


def baseline_rate_breaches(warehouse, day: date, baseline: Baseline = Baseline()) -> list[Breach]:
    """:func:`baseline_breaches` on ``delivery_outcomes`` (day and its trailing days)."""
    daily = category_daily(_read_outcomes(warehouse, day - timedelta(days=baseline.days), day))
    return baseline_breaches(daily, day, baseline)


def format_alert(breaches: list[dict] | list[Breach], day: str, warehouse: str = "",
                 mode: str = "fixed") -> str:
    """The alert text: one line per breach, then where the numbers come from."""
    items = [b if isinstance(b, Breach) else Breach(**b) for b in breaches]
    lines = [f":rotating_light: mailpulse: {len(items)} rate alert(s) for {day}"
             + (" (each category against its own last 28 days)" if mode == "baseline" else "")]
    lines += [f"• {b.describe()}" for b in items]
    if warehouse:
        lines.append(f"from delivery_outcomes in {warehouse}")
    return "\n".join(lines)


class AlertNotPosted(RuntimeError):
    """Slack refused or could not be reached; the message says why (retry or fix)."""


def format_empty_alert(days: list[str], warehouse: str = "", where: str = "") -> str:
    """The alert for days with no event at all in the warehouse."""
    span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    lines = [f":warning: mailpulse: no events at all for {span}"
             + (f" in {warehouse}" if warehouse else ""),
             "Is the collector (`mailpulse serve`) or the SES queue drain running, and is the "
             "archive the DAG reads the one they write to?" + (f" (read: {where})" if where else "")]
    return "\n".join(lines)


def _slack_notifier(token: str, channel: str | None, api_url: str | None):
    from .slack import DEFAULT_API_URL, SlackConfig, SlackNotifier
    if not channel:
        raise ConfigurationError(
            "a Slack token is configured but no channel: set MAILPULSE_SLACK_CHANNEL, the "
            "Variable mailpulse_slack_channel or the run param slack_channel")
    url = api_url or DEFAULT_API_URL
    return SlackNotifier(SlackConfig(token=token, channel=channel,
                                     api_url=url if url.endswith("/") else url + "/"))


def _post(text: str, *, token: str | None, channel: str | None, api_url: str | None,
          what: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Post ``text`` (or log it at WARNING without a token); raises AlertNotPosted."""
    if not token:
        log.warning("%s\n(not posted: no Slack token; set SLACK_BOT_TOKEN or the password "
                    "of the mailpulse_slack connection)", text)
        return {"posted": False, "reason": "no Slack token", **extra, "text": text}
    errors: list[str] = []
    posted = _slack_notifier(token, channel, api_url).post_message(text, errors=errors)
    if posted is None:
        raise AlertNotPosted("; ".join(errors) or f"Slack did not accept the {what}")
    return {"posted": True, "channel": posted["channel"], "ts": posted["ts"], **extra,
            "text": text}


def post_rate_alert(breaches: list[dict], *, day: str, token: str | None, channel: str | None,
                    api_url: str | None = None, warehouse: str = "",
                    empty_days: list[str] | None = None, where: str = "",
                    mode: str = "fixed") -> dict[str, Any]:
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
    return _post("\n\n".join(parts), token=token, channel=channel, api_url=api_url,
                 what="alert", extra={"breaches": len(breaches), "empty_days": empty_days})


def post_failure_alert(*, dag_id: str, task_id: str, run_id: str, days: list[str],
                       error: str, try_number: int | None = None, log_url: str | None = None,
                       token: str | None, channel: str | None,
                       api_url: str | None = None) -> dict[str, Any]:
    """A failed DAG task, in one Slack message (logged without a token): what failed,
    for which days, the error, and where to look and what to do."""
    span = (days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}") if days else "?"
    lines = [f":x: mailpulse: {dag_id}.{task_id} failed for {span}"
             + (f" (try {try_number})" if try_number else ""),
             f"error: {_trunc_text(error, 1500)}",
             f"run: {run_id}"]
    if log_url:
        lines.append(f"log: {log_url}")
    lines.append("Fix the cause, then clear the task in the Airflow UI (or `airflow tasks "
                 f"clear {dag_id} -t {task_id} -d`); every task is safe to rerun.")
    return _post("\n".join(lines), token=token, channel=channel, api_url=api_url,
                 what="failure alert", extra={"dag_id": dag_id, "task_id": task_id})


def _trunc_text(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- windows ---------------------------------------------------------------------------

def resolve_window(warehouse, start: date | None, end: date | None, *, days: int = 30,
                   table: str = "events") -> tuple[date, date]:
    """[start, end]; a missing end is the latest ``event_date`` in ``table``, a missing
    start ``days - 1`` days before end (or the earliest date in ``table`` if later)."""
    if isinstance(start, str):
        start = date.fromisoformat(start)
    if isinstance(end, str):
        end = date.fromisoformat(end)
    if end is None or start is None:
        wh = open_configured(warehouse)
        row = wh.query(f"SELECT MIN(event_date) AS lo, MAX(event_date) AS hi FROM {table}").to_pylist()[0]
        if row["hi"] is None:
            raise ConfigurationError(
                f"{table} in {wh.uri} is empty: load a day first (`mailpulse load`), compute "
                "outcomes (`mailpulse outcomes`), or set START and END in the parameters cell")
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


# -- delivery health ---------------------------------------------------------------------

def category_summary(daily: pd.DataFrame) -> pd.DataFrame:
    """One row per category over the whole frame: counts summed, rates recomputed."""
    counts = [c for c in COUNT_COLUMNS if c in daily.columns]
    out = daily.groupby("category", as_index=False)[counts].sum()
    out = add_rates(out).sort_values("requests", ascending=False).reset_index(drop=True)
    return out[["category", *counts, *RATES]]


def plot_rates(daily: pd.DataFrame, categories: Iterable[str] | None = None,
               rates: Iterable[str] = ("delivered_rate", "bounce_rate", "spam_report_rate"),
               thresholds: Thresholds | None = None):
    """One line chart per rate: each category over time (thresholds as dashed lines)."""
    import matplotlib.pyplot as plt
    rates = list(rates)
    cats = list(categories) if categories is not None else top_categories(daily)
    fig, axes = plt.subplots(len(rates), 1, figsize=(10, 3.2 * len(rates)), sharex=True,
                             squeeze=False)
    limits = {"bounce_rate": thresholds.bounce_rate,
              "spam_report_rate": thresholds.spam_report_rate} if thresholds else {}
    for ax, rate in zip(axes[:, 0], rates):
        table = rate_table(daily, rate, cats)
        if not table.empty:
            table.plot(ax=ax, marker="o", legend=False)
        num, den = RATES[rate]
        ax.set_title(f"{rate} = {num} / {den}")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.1%}"))
        if rate in limits:
            ax.axhline(limits[rate], color="red", linestyle="--", linewidth=1, label="threshold")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("event_date (UTC)")
    fig.tight_layout()
    return fig


def plot_stacked_outcomes(daily: pd.DataFrame, categories: Iterable[str] | None = None):
    """Stacked bars per day: delivered / deferred / bounces / blocks / drops; one panel
    for all categories and one per category given."""
    import matplotlib.pyplot as plt
    panels = [None, *(categories or [])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, cat in zip(axes[:, 0], panels):
        table = stacked_outcomes(daily, cat)
        if not table.empty:
            table.index = [pd.Timestamp(d).strftime("%m-%d") for d in table.index]
            table.plot(kind="bar", stacked=True, ax=ax, width=0.8)
        ax.set_title(f"outcomes per day: {cat or 'all categories'}")
        ax.set_ylabel("recipients")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# -- bounces -----------------------------------------------------------------------------

def bounce_classes(daily: pd.DataFrame) -> pd.DataFrame:
    """Per day: bounced recipients by class (hard, soft, undetermined, block)."""
    cols = {"bounces_hard": "hard", "bounces_soft": "soft",
            "bounces_undetermined": "undetermined", "blocks": "block"}
    present = [c for c in cols if c in daily.columns]
    return daily.groupby("event_date")[present].sum().rename(columns=cols)


def top_bounce_reasons(warehouse=None, start: date | None = None, end: date | None = None,
                       category: str | None = None, n: int = 10) -> pd.DataFrame:
    """The most frequent bounce reasons (bounced recipients) with their class and
    providers, over [start, end]."""
    wh = open_configured(warehouse)
    start, end = resolve_window(wh, start, end)
    sql = f"""
        SELECT IFNULL(reason, '(no reason given)') AS reason,
               IFNULL(bounce_class, 'undetermined') AS bounce_class,
               COUNT(DISTINCT CONCAT(IFNULL(message_id, ''), '/', IFNULL(email_hash, ''))) AS recipients,
               COUNT(*) AS events,
               STRING_AGG(DISTINCT provider, ',') AS providers
        FROM events
        WHERE event_date BETWEEN @start_date AND @end_date AND event_type = 'bounce'
              {_category_filter(category)}
        GROUP BY reason, bounce_class
        ORDER BY recipients DESC, reason
        LIMIT @n"""
    return wh.query_df(sql, _params(start_date=start, end_date=end, category=category, n=n))


def bounce_domains(warehouse=None, start: date | None = None, end: date | None = None,
                   category: str | None = None, n: int = 10) -> pd.DataFrame:
    """Per recipient domain (settled status from recipient_status): recipients, bounced
    by class, dropped, and bounce_rate = bounced / recipients; the ``n`` domains with
    the most bounced recipients."""
    wh = open_configured(warehouse)
    start, end = resolve_window(wh, start, end, table="recipient_status")
    sql = f"""
        SELECT recipient_domain,
               COUNT(*) AS recipients,
               CAST(COUNTIF(status = 'bounce') AS INT64) AS bounced,
               CAST(COUNTIF(status = 'bounce' AND bounce_class = 'hard') AS INT64) AS hard,
               CAST(COUNTIF(status = 'bounce' AND bounce_class = 'soft') AS INT64) AS soft,
               CAST(COUNTIF(status = 'bounce' AND bounce_class = 'block') AS INT64) AS block,
               CAST(COUNTIF(status = 'dropped') AS INT64) AS dropped,
               SAFE_DIVIDE(COUNTIF(status = 'bounce'), COUNT(*)) AS bounce_rate
        FROM recipient_status
        WHERE event_date BETWEEN @start_date AND @end_date {_category_filter(category)}
        GROUP BY recipient_domain
        ORDER BY bounced DESC, recipients DESC, recipient_domain
        LIMIT @n"""
    return wh.query_df(sql, _params(start_date=start, end_date=end, category=category, n=n))


def suppressions_growth(warehouse=None, start: date | None = None,
                        end: date | None = None) -> pd.DataFrame:
    """Per day and reason: recipients suppressed for the first time (``new``) and the
    running total of suppressed recipients (``total``, every reason together, counting
    recipients first suppressed before ``start`` as the starting level)."""
    wh = open_configured(warehouse)
    start, end = resolve_window(wh, start, end, table="suppressions")
    firsts = wh.query_df("""
        WITH firsts AS (
          SELECT email_hash, event_date, reason
          FROM suppressions
          WHERE event_date <= @end_date
          QUALIFY ROW_NUMBER() OVER (PARTITION BY email_hash ORDER BY event_date, reason) = 1)
        SELECT event_date, reason, COUNT(*) AS new
        FROM firsts GROUP BY event_date, reason ORDER BY event_date, reason""",
                         {"end_date": end})
    days = pd.date_range(start, end, freq="D")
    if firsts.empty:
        return pd.DataFrame({"new": 0, "total": 0}, index=days).rename_axis("event_date")
    firsts["event_date"] = pd.to_datetime(firsts["event_date"])
    before = int(firsts.loc[firsts["event_date"] < pd.Timestamp(start), "new"].sum())
    table = (firsts[firsts["event_date"] >= pd.Timestamp(start)]
             .pivot_table(index="event_date", columns="reason", values="new", aggfunc="sum")
             .reindex(days, fill_value=0).fillna(0).astype("int64"))
    table.index.name = "event_date"
    table.columns.name = None
    table["new"] = table.sum(axis=1)
    table["total"] = before + table["new"].cumsum()
    return table


def plot_bounces(classes: pd.DataFrame, domains: pd.DataFrame, growth: pd.DataFrame):
    """Three panels: bounce classes per day, the worst domains, suppressions growth."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(10, 11))
    if not classes.empty:
        c = classes.copy()
        c.index = [pd.Timestamp(d).strftime("%m-%d") for d in c.index]
        c.plot(kind="bar", stacked=True, ax=axes[0], width=0.8)
    axes[0].set_title("bounced recipients per day by class")
    if not domains.empty:
        domains.set_index("recipient_domain")[["hard", "soft", "block"]].plot(
            kind="barh", stacked=True, ax=axes[1])
        axes[1].invert_yaxis()
    axes[1].set_title("bounced recipients by domain (settled status)")
    reasons = [c for c in growth.columns if c not in ("new", "total")]
    if reasons:
        g = growth[reasons].copy()
        g.index = [pd.Timestamp(d).strftime("%m-%d") for d in g.index]
        g.plot(kind="bar", stacked=True, ax=axes[2], width=0.8, alpha=0.7)
    ax2 = axes[2].twinx()
    ax2.plot(range(len(growth)), growth["total"].to_numpy(), color="black", marker="o",
             label="total suppressed")
    ax2.set_ylabel("total suppressed")
    ax2.legend(loc="upper left")
    axes[2].set_title("suppressions: new per day by reason, and the running total")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- campaign post-mortem ----------------------------------------------------------------

@dataclass(frozen=True)
class SendWindow:
    category: str
    start: datetime
    end: datetime

    def describe(self) -> str:
        return f"category {self.category!r}, sent {self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC"


def _utc(ts) -> datetime | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime()


def send_window(warehouse=None, category: str | None = None, send_start=None, send_end=None,
                day: date | None = None) -> SendWindow:
    """The campaign to look at. Missing parts are found in the warehouse: the category
    with most recipients on ``day`` (default: the latest day of recipient_status), and
    its first and last send event that day."""
    wh = open_configured(warehouse)
    start_ts, end_ts = _utc(send_start), _utc(send_end)
    if category and start_ts and end_ts:
        if start_ts > end_ts:
            raise ConfigurationError(f"SEND_START {start_ts} is after SEND_END {end_ts}")
        return SendWindow(category, start_ts, end_ts)
    if day is None:
        day = (start_ts.date() if start_ts else
               resolve_window(wh, None, None, table="recipient_status")[1])
    if not category:
        top = wh.query_df("""
            SELECT category, COUNT(*) AS recipients
            FROM recipient_status, UNNEST(categories) AS category
            WHERE event_date = @day GROUP BY category ORDER BY recipients DESC, category LIMIT 1""",
                          {"day": day})
        if top.empty:
            raise ConfigurationError(f"no recipients on {day}: set CATEGORY and the send window")
        category = str(top["category"][0])
    found = wh.query_df("""
        SELECT MIN(first_event_ts) AS first_ts, MAX(first_event_ts) AS last_ts
        FROM recipient_status
        WHERE event_date = @day AND @category IN UNNEST(categories)""",
                        {"day": day, "category": category})
    if found.empty or pd.isna(found["first_ts"][0]):
        raise ConfigurationError(f"category {category!r} has no recipients on {day}; "
                                 "check CATEGORY or set SEND_START / SEND_END")
    return SendWindow(category, start_ts or _utc(found["first_ts"][0]),
                      end_ts or _utc(found["last_ts"][0]))


def campaign_recipients(warehouse, window: SendWindow) -> pd.DataFrame:
    """recipient_status rows of the campaign: recipients whose first send event falls in
    the window and whose categories include the campaign's."""
    wh = open_configured(warehouse)
    return wh.query_df("""
        SELECT provider, message_id, email_hash, recipient_domain, status, settled,
               bounce_class, reason, first_event_ts, delivered_ts, status_event_ts,
               deferred_count
        FROM recipient_status
        WHERE event_date BETWEEN @start_day AND @end_day
          AND first_event_ts BETWEEN @start_ts AND @end_ts
          AND @category IN UNNEST(categories)""",
                       {"start_day": window.start.date(), "end_day": window.end.date(),
                        "start_ts": window.start, "end_ts": window.end,
                        "category": window.category})


def campaign_funnel(recipients: pd.DataFrame) -> pd.DataFrame:
    """Recipients per settled status with their share (statuses that end the wait first)."""
    order = ["delivered", "bounce", "dropped", "deferred", "processed"]
    counts = recipients["status"].value_counts().reindex(order, fill_value=0)
    total = int(counts.sum())
    return pd.DataFrame({"recipients": counts.astype("int64"),
                         "share": counts / total if total else counts * 0.0})


def time_to_deliver(recipients: pd.DataFrame) -> pd.Series:
    """Minutes from the first send event to delivery, for delivered recipients."""
    d = recipients.dropna(subset=["delivered_ts"])
    minutes = (pd.to_datetime(d["delivered_ts"], utc=True)
               - pd.to_datetime(d["first_event_ts"], utc=True)).dt.total_seconds() / 60
    return minutes.rename("minutes_to_deliver")


def campaign_timeline(warehouse, window: SendWindow, hours_after: int = 72) -> pd.DataFrame:
    """Events per hour and type for the campaign's category from the window's start to
    ``hours_after`` hours after its end."""
    wh = open_configured(warehouse)
    until = window.end + timedelta(hours=hours_after)
    df = wh.query_df("""
        SELECT TIMESTAMP_TRUNC(event_ts, HOUR) AS hour, event_type, COUNT(*) AS events
        FROM events
        WHERE event_date BETWEEN @start_day AND @end_day
          AND event_ts BETWEEN @start_ts AND @until_ts
          AND @category IN UNNEST(categories)
        GROUP BY hour, event_type ORDER BY hour, event_type""",
                     {"start_day": window.start.date(), "end_day": until.date(),
                      "start_ts": window.start, "until_ts": until, "category": window.category})
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index="hour", columns="event_type", values="events",
                          aggfunc="sum", fill_value=0)


def campaign_breakdown(recipients: pd.DataFrame, by: str = "recipient_domain",
                       n: int = 10) -> pd.DataFrame:
    """Per ``by`` (domain, provider): recipients, each status, and bounce_rate."""
    if recipients.empty:
        return pd.DataFrame()
    t = recipients.pivot_table(index=by, columns="status", values="email_hash",
                               aggfunc="count", fill_value=0)
    t["recipients"] = t.sum(axis=1)
    t["bounce_rate"] = t.get("bounce", 0) / t["recipients"]
    return t.sort_values(["recipients"], ascending=False).head(n)


def plot_campaign(window: SendWindow, funnel: pd.DataFrame, timeline: pd.DataFrame,
                  minutes: pd.Series):
    """Three panels: settled status, events per hour, time to delivery."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(10, 11))
    funnel["recipients"].plot(kind="barh", ax=axes[0], color="tab:blue")
    axes[0].invert_yaxis()
    axes[0].set_title(f"settled status: {window.describe()}")
    if not timeline.empty:
        timeline.plot(ax=axes[1], marker=".")
    axes[1].set_title("events per hour")
    axes[1].set_ylabel("events")
    if len(minutes):
        minutes.clip(upper=minutes.quantile(0.99)).plot(kind="hist", bins=30, ax=axes[2])
    axes[2].set_title("minutes from first send event to delivery (99th percentile cap)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
