"""Delivery health: per day and category, counts and rates (the definitions of
:data:`pipelines.analysis.RATES`), the tables the notebooks plot and their figures."""

from __future__ import annotations

from datetime import date
from typing import Iterable

import pandas as pd

from ..analysis import (
    COUNT_COLUMNS,
    RATES,
    STACKED_OUTCOMES,
    Thresholds,
    _read_outcomes,
    add_rates,
    category_daily,
    open_configured,
)
from .window import data_window, trim_empty_tail


def delivery_health(
    warehouse=None,
    start: date | None = None,
    end: date | None = None,
    categories: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Per day and category: counts and rates over [start, end] (default:
    :func:`data_window`), without trailing days that have no requests."""
    wh = open_configured(warehouse)
    start, end = data_window(wh, start, end)
    return trim_empty_tail(category_daily(_read_outcomes(wh, start, end), categories))


def top_categories(daily: pd.DataFrame, n: int = 6, by: str = "requests") -> list[str]:
    """The ``n`` categories with the most ``by`` over the frame."""
    if daily.empty:
        return []
    return daily.groupby("category")[by].sum().sort_values(ascending=False).head(n).index.tolist()


def rate_table(
    daily: pd.DataFrame,
    rate: str,
    categories: Iterable[str] | None = None,
    column: str = "category",
) -> pd.DataFrame:
    """``rate`` as a date x ``column`` table (for line plots)."""
    df = daily if categories is None else daily[daily[column].isin(list(categories))]
    return df.pivot_table(index="event_date", columns=column, values=rate, aggfunc="first")


def stacked_outcomes(daily: pd.DataFrame, category: str | None = None) -> pd.DataFrame:
    """Per day: how many messages ended in each outcome (for a stacked bar plot)."""
    df = daily if category is None else daily[daily["category"] == category]
    cols = [c for c in STACKED_OUTCOMES if c in df.columns]
    return df.groupby("event_date")[cols].sum()


def category_summary(daily: pd.DataFrame) -> pd.DataFrame:
    """One row per category over the whole frame: counts summed, rates recomputed."""
    counts = [c for c in COUNT_COLUMNS if c in daily.columns]
    out = daily.groupby("category", as_index=False)[counts].sum()
    out = add_rates(out).sort_values("requests", ascending=False).reset_index(drop=True)
    return out[["category", *counts, *RATES]]


def plot_rates(
    daily: pd.DataFrame,
    categories: Iterable[str] | None = None,
    rates: Iterable[str] = ("delivered_rate", "bounce_rate", "spam_report_rate"),
    thresholds: Thresholds | None = None,
    column: str = "category",
):
    """One line chart per rate: each ``column`` value (category, mailbox provider) over
    time (thresholds as dashed lines)."""
    import matplotlib.pyplot as plt

    rates = list(rates)
    if categories is not None:
        cats = list(categories)
    elif column == "category":
        cats = top_categories(daily)
    else:
        cats = (
            daily.groupby(column)["requests"]
            .sum()
            .sort_values(ascending=False)
            .head(6)
            .index.tolist()
        )
    fig, axes = plt.subplots(
        len(rates), 1, figsize=(10, 3.2 * len(rates)), sharex=True, squeeze=False
    )
    limits = (
        {"bounce_rate": thresholds.bounce_rate, "spam_report_rate": thresholds.spam_report_rate}
        if thresholds
        else {}
    )
    for ax, rate in zip(axes[:, 0], rates):
        table = rate_table(daily, rate, cats, column=column)
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
