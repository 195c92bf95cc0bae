"""What the per-domain views share: ``domain_outcomes`` rows with their mailbox provider,
and counts summed over keys with the rates recomputed (:mod:`.mailboxes`, :mod:`.domains`)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from ..analysis import COUNT_COLUMNS, add_rates, open_configured


def _domain_rows(warehouse, start: date, end: date, category: str | None) -> pd.DataFrame:
    from ..breakdown import read_domain_outcomes
    from ..mailbox import add_mailbox_column

    df = read_domain_outcomes(open_configured(warehouse), start, end, category=category)
    return add_mailbox_column(df) if not df.empty else df.assign(mailbox_provider=[])


def _sum_counts(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    counts = [c for c in COUNT_COLUMNS if c in df.columns]
    if df.empty:
        out = pd.DataFrame(columns=[*keys, *counts])
    else:
        out = df.groupby(keys, as_index=False, dropna=False)[counts].sum()
    for c in counts:
        out[c] = out[c].astype("int64")
    return add_rates(out)
