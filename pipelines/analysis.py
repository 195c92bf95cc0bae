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


def format_alert(breaches: list[dict] | list[Breach], day: str, warehouse: str = "") -> str:
    """The alert text: one line per breach, then where the numbers come from."""
    items = [b if isinstance(b, Breach) else Breach(**b) for b in breaches]
    lines = [f":rotating_light: mailpulse: {len(items)} rate alert(s) for {day}"]
    lines += [f"• {b.describe()}" for b in items]
    if warehouse:
        lines.append(f"from delivery_outcomes in {warehouse}")
    return "\n".join(lines)


class AlertNotPosted(RuntimeError):
    """Slack refused or could not be reached; the message says why (retry or fix)."""


def post_rate_alert(breaches: list[dict], *, day: str, token: str | None, channel: str | None,
                    api_url: str | None = None, warehouse: str = "") -> dict[str, Any]:
    """Posts one Slack message listing ``breaches`` through :mod:`pipelines.slack`
    (nothing when there are none). Without a token the alert is logged at WARNING
    instead. Raises :class:`AlertNotPosted` when Slack fails, so a scheduler retries."""
    from .slack import DEFAULT_API_URL, SlackConfig, SlackNotifier
    if not breaches:
        log.info("no rate above its threshold on %s; nothing to post", day)
        return {"posted": False, "reason": "no breaches", "breaches": 0}
    text = format_alert(breaches, day, warehouse)
    if not token:
        log.warning("%s\n(not posted: no Slack token; set SLACK_BOT_TOKEN or the password "
                    "of the mailpulse_slack connection)", text)
        return {"posted": False, "reason": "no Slack token", "breaches": len(breaches),
                "text": text}
    if not channel:
        raise ConfigurationError(
            "a Slack token is configured but no channel: set MAILPULSE_SLACK_CHANNEL, the "
            "Variable mailpulse_slack_channel or the run param slack_channel")
    url = api_url or DEFAULT_API_URL
    notifier = SlackNotifier(SlackConfig(token=token, channel=channel,
                                         api_url=url if url.endswith("/") else url + "/"))
    errors: list[str] = []
    posted = notifier.post_message(text, errors=errors)
    if posted is None:
        raise AlertNotPosted("; ".join(errors) or "Slack did not accept the message")
    return {"posted": True, "channel": posted["channel"], "ts": posted["ts"],
            "breaches": len(breaches), "text": text}


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


# -- the notebook frames (pipelines/frames.py) -----------------------------------------
# Issue 15 split this module: the frames and figures of the notebooks live in
# pipelines.frames; their names stay importable from here (resolved on first use, since
# pipelines.frames itself imports the shared pieces above).

def __getattr__(name: str):
    from . import frames
    if name in frames.__all__:
        return getattr(frames, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
