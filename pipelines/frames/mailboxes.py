"""Mailbox providers: ``domain_outcomes`` per mailbox provider (Gmail, Microsoft, docomo,
...; the domain -> provider map is pipelines/mailbox.py) and day, summed, and their plot."""

from __future__ import annotations

from datetime import date
from typing import Iterable

import pandas as pd

from ..analysis import COUNT_COLUMNS, RATES, open_configured
from ._common import _domain_rows, _sum_counts
from .health import plot_rates
from .window import data_window, trim_empty_tail


def mailbox_daily(
    warehouse=None, start: date | None = None, end: date | None = None, category: str | None = None
) -> pd.DataFrame:
    """Per day and mailbox provider (Gmail, Microsoft, Yahoo! JAPAN, docomo, au, ...,
    ``other``): the ``domain_outcomes`` counts summed over domains, sending providers
    and (unless ``category`` is given) categories, with the rates recomputed. Summed
    over mailbox providers, a day's counts are that day's ``delivery_outcomes`` counts."""
    wh = open_configured(warehouse)
    start, end = data_window(wh, start, end)
    out = _sum_counts(_domain_rows(wh, start, end, category), ["event_date", "mailbox_provider"])
    out["event_date"] = pd.to_datetime(out["event_date"])
    out = trim_empty_tail(out.sort_values(["event_date", "mailbox_provider"]))
    return out.reset_index(drop=True)


def mailbox_summary(daily: pd.DataFrame) -> pd.DataFrame:
    """One row per mailbox provider over the whole frame of :func:`mailbox_daily`, most
    requests first (``other`` and ``(unknown)`` last), rates recomputed from the sums."""
    from ..mailbox import OTHER, UNKNOWN

    out = _sum_counts(daily, ["mailbox_provider"])
    last = out["mailbox_provider"].isin([OTHER, UNKNOWN]).astype(int)
    out = (
        out.assign(_last=last)
        .sort_values(["_last", "requests", "mailbox_provider"], ascending=[True, False, True])
        .drop(columns="_last")
        .reset_index(drop=True)
    )
    counts = [c for c in COUNT_COLUMNS if c in out.columns]
    return out[["mailbox_provider", *counts, *RATES]]


def top_mailboxes(daily: pd.DataFrame, n: int = 6) -> list[str]:
    """The ``n`` mailbox providers with most requests (``other`` and ``(unknown)`` last)."""
    return mailbox_summary(daily)["mailbox_provider"].head(n).tolist() if not daily.empty else []


def plot_mailbox_rates(
    daily: pd.DataFrame,
    mailboxes: Iterable[str] | None = None,
    rates: Iterable[str] = ("delivered_rate", "bounce_rate", "open_rate"),
):
    """One line chart per rate: each mailbox provider over time."""
    return plot_rates(
        daily,
        list(mailboxes) if mailboxes is not None else top_mailboxes(daily),
        rates=rates,
        column="mailbox_provider",
    )
