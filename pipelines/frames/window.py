"""Windows without empty tails: the [start, end] a notebook shows ends on the latest day
mail was *sent* (requests > 0), not on a day that holds only late reports of the day before,
and :func:`trim_empty_tail` drops such trailing days from a frame, so no plot ends in a run
of zeros."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from ..analysis import ConfigurationError, open_configured, resolve_window


def data_window(
    warehouse=None,
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    days: int = 30,
) -> tuple[date, date]:
    """[start, end] for the notebooks: a missing ``end`` is the latest day of
    ``delivery_outcomes`` with requests (mail sent that day), so a day that holds only
    late reports (a bounce at 00:10 of mail sent the evening before) does not become the
    last, almost empty, point of every plot; a missing ``start`` is ``days - 1`` days
    before ``end`` (or the first day with requests, if later)."""
    if isinstance(start, str):
        start = date.fromisoformat(start)
    if isinstance(end, str):
        end = date.fromisoformat(end)
    if start is not None and end is not None:
        return resolve_window(warehouse, start, end)
    wh = open_configured(warehouse)
    row = wh.query("""
        SELECT MIN(event_date) AS lo, MAX(event_date) AS hi
        FROM (SELECT event_date FROM delivery_outcomes
              GROUP BY event_date HAVING SUM(requests) > 0)""").to_pylist()[0]
    if row["hi"] is None:
        raise ConfigurationError(
            f"delivery_outcomes in {wh.uri} has no day with requests: load a day first "
            "(`mailpulse load`), compute outcomes (`mailpulse outcomes --recompute` or "
            "compute_outcomes), or set START and END in the parameters cell"
        )
    end = end or row["hi"]
    start = start or max(row["lo"], end - timedelta(days=days - 1))
    return resolve_window(wh, start, end)


def trim_empty_tail(
    df: pd.DataFrame, date_column: str = "event_date", volume: str = "requests"
) -> pd.DataFrame:
    """``df`` without its trailing days whose ``volume`` (summed over the day's rows) is
    0: days after the last send, which hold only late reports of earlier mail and would
    plot as zeros. Days inside the range are kept as they are."""
    if df.empty or volume not in df.columns:
        return df
    per_day = df.groupby(date_column)[volume].sum()
    sent = per_day[per_day > 0]
    if sent.empty:
        return df.iloc[0:0]
    return df[df[date_column] <= sent.index.max()].reset_index(drop=True)
