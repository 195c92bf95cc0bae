"""Delivery outcomes summed along one dimension: ``mailpulse outcomes --by
day|category|provider|mailbox``.

``day``, ``category`` and ``provider`` (the sending provider: sendgrid, ses, cmc) sum
``delivery_outcomes`` rows; ``mailbox`` sums ``domain_outcomes`` rows (the same metrics
per recipient domain) by mailbox provider (pipelines/mailbox.py). Counts add up; rates
are recomputed from the sums with the one definition delivery_outcomes uses
(``pipelines.analysis.RATES``: bounce_rate = bounces / requests, blocks excluded, ...).
Unique opens and clicks are sums of daily uniques.
"""

from __future__ import annotations

from datetime import date

from .outcomes import COUNT_COLUMNS, RATE_COLUMNS, _check_range, _read
from .warehouse import Warehouse, open_warehouse

#: ``--by`` value -> the column rows are grouped by.
BY_COLUMN = {
    "day": "event_date",
    "category": "category",
    "provider": "provider",
    "mailbox": "mailbox_provider",
}
BY_CHOICES = tuple(BY_COLUMN)


def rate_definitions() -> dict[str, tuple[str, str]]:
    """rate -> (numerator, denominator), as delivery_outcomes defines them."""
    from .analysis import RATES

    return dict(RATES)


def read_domain_outcomes(
    warehouse: str | Warehouse, start: date, end: date, category: str | None = None
):
    """``domain_outcomes`` rows for [start, end] (optionally one category) as a DataFrame."""
    _check_range(start, end)
    wh = open_warehouse(warehouse)
    where = "event_date BETWEEN @start_date AND @end_date"
    params = {"start_date": start, "end_date": end}
    if category is not None:
        where += " AND category = @category"
        params["category"] = category
    return _read(
        wh,
        "domain_outcomes",
        f"SELECT * FROM domain_outcomes WHERE {where} "
        "ORDER BY event_date, category, provider, recipient_domain",
        params,
    )


def summarize_by(df, by: str):
    """Rows of delivery_outcomes (or, for ``mailbox``, domain_outcomes) summed per value
    of ``by``: the key column, ``providers`` (the sending providers seen), every count
    column, and the rates recomputed from the sums. Ordered by day, name, or (mailbox)
    most requests first with ``other`` and ``(unknown)`` last."""
    import pandas as pd

    from .mailbox import OTHER, UNKNOWN, add_mailbox_column

    if by not in BY_COLUMN:
        raise ValueError(f"by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    key = BY_COLUMN[by]
    if df.empty:
        return pd.DataFrame(columns=[key, "providers", *COUNT_COLUMNS, *RATE_COLUMNS])
    if by == "mailbox":
        if "recipient_domain" not in df.columns:
            raise ValueError("--by mailbox needs domain_outcomes rows (read_domain_outcomes)")
        df = add_mailbox_column(df)
    g = df.groupby(key, sort=True, dropna=False)
    out = g[list(COUNT_COLUMNS)].sum().astype("int64")
    out.insert(0, "providers", g["provider"].agg(lambda s: ",".join(sorted(set(s)))))
    out = out.reset_index()
    for rate, (num, den) in rate_definitions().items():
        out[rate] = (out[num] / out[den]).where(out[den] != 0)
    if by == "mailbox":
        last = out[key].isin([OTHER, UNKNOWN]).astype(int) + (out[key] == UNKNOWN).astype(int)
        out = (
            out.assign(_last=last)
            .sort_values(["_last", "requests", key], ascending=[True, False, True])
            .drop(columns="_last")
            .reset_index(drop=True)
        )
    return out


__all__ = ["BY_CHOICES", "BY_COLUMN", "read_domain_outcomes", "summarize_by", "rate_definitions"]
