"""Recipient domains ranked by a rate, with their volume, among domains with at least
``min_requests`` requests (a domain of 3 recipients with 1 bounce is noise, not the worst
domain)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from ..analysis import RATES, ConfigurationError, open_configured
from ._common import _domain_rows, _sum_counts
from .window import data_window

#: A domain needs this many requests over the window to be ranked by its rate.
DEFAULT_MIN_REQUESTS = 50


def domain_ranking(
    warehouse=None,
    start: date | None = None,
    end: date | None = None,
    category: str | None = None,
    n: int = 10,
    rate: str = "bounce_rate",
    min_requests: int = DEFAULT_MIN_REQUESTS,
) -> pd.DataFrame:
    """Recipient domains ranked by ``rate`` (a key of :data:`~pipelines.analysis.RATES`,
    default ``bounce_rate`` = bounces / requests, blocks excluded), worst first, with
    their volume (``requests``), mailbox provider, bounces, blocks, ``block_rate`` and
    ``bounced_rate`` (bounces + blocks over requests). Only domains with at least
    ``min_requests`` requests over [start, end] are ranked; ``frame.attrs`` says how many
    smaller domains (and requests) were left out."""
    if rate not in RATES:
        raise ConfigurationError(f"rate {rate!r} is not one of {', '.join(RATES)}")
    wh = open_configured(warehouse)
    start, end = data_window(wh, start, end)
    rows = _domain_rows(wh, start, end, category)
    per = _sum_counts(rows, ["recipient_domain", "mailbox_provider"])
    per["bounced_rate"] = (
        (per["bounces"] + per["blocks"]) / per["requests"].where(per["requests"] > 0)
    ).astype("float64")
    big = per["requests"] >= max(min_requests, 1)
    ranked = (
        per[big]
        .sort_values(
            [rate, "requests", "recipient_domain"],
            ascending=[False, False, True],
            na_position="last",
        )
        .head(n)
        .reset_index(drop=True)
    )
    ranked.index = pd.RangeIndex(1, len(ranked) + 1, name="rank")
    cols = [
        "recipient_domain",
        "mailbox_provider",
        "requests",
        "delivered",
        "bounces",
        "blocks",
        rate,
        "bounced_rate",
        "block_rate",
    ]
    out = ranked[list(dict.fromkeys(cols))]
    out.attrs.update(
        rate=rate,
        min_requests=min_requests,
        domains_below_min=int((~big).sum()),
        requests_below_min=int(per.loc[~big, "requests"].sum()),
    )
    return out


def bounce_domains(
    warehouse=None,
    start: date | None = None,
    end: date | None = None,
    category: str | None = None,
    n: int = 10,
    min_requests: int = DEFAULT_MIN_REQUESTS,
) -> pd.DataFrame:
    """The domains that bounce most *by rate* (:func:`domain_ranking` on bounce_rate)."""
    return domain_ranking(warehouse, start, end, category=category, n=n, min_requests=min_requests)
