"""The frames and figures of the analyst notebooks (notebooks/*.ipynb).

Notebook cells call these functions and plot what they return; no SQL or arithmetic is
copied into cells. Every function that reads takes a warehouse (a URI such as
``duckdb:///path/file.duckdb`` / ``bigquery://PROJECT/DATASET``, or a warehouse object);
every query is BigQuery SQL with ``@name`` parameters, so the same notebook runs on the
embedded default and on BigQuery.

The shared pieces (the rate definitions :data:`pipelines.analysis.RATES`, the warehouse
helpers, :func:`pipelines.analysis.category_daily`) stay in :mod:`pipelines.analysis`,
next to the daily alerts that use them; this module depends on them, never the reverse.

Views and what they count:

- :func:`data_window` ends on the latest day mail was *sent* (requests > 0), not on a
  day that holds only late reports of the day before, and :func:`trim_empty_tail` drops
  such trailing days from a frame, so no plot ends in a run of zeros.
- :func:`mailbox_daily` / :func:`mailbox_summary`: ``domain_outcomes`` per mailbox
  provider (Gmail, Microsoft, docomo, ...; pipelines/mailbox.py) and day.
- :func:`domain_ranking`: recipient domains ranked by a rate, with their volume, among
  domains with at least ``min_requests`` requests (a domain of 3 recipients with 1 bounce
  is noise, not the worst domain).
- :func:`bounce_codes`: bounced recipients grouped by enhanced status code (RFC 3463,
  ``5.1.1``), across providers; each recipient counted once (CMC reports a failure
  twice, as a failed delivery and as a bounce); CMC's own status numbers count under
  the code they document (:data:`CMC_STATUS_CODE`).
- :func:`campaign_funnel`: sent -> delivered -> opened -> clicked, each stage a subset of
  the one before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterable

import pandas as pd

from .analysis import (
    COUNT_COLUMNS,
    RATES,
    STACKED_OUTCOMES,
    ConfigurationError,
    Thresholds,
    _category_filter,
    _params,
    _read_outcomes,
    add_rates,
    category_daily,
    open_configured,
    resolve_window,
)

# -- windows without empty tails ---------------------------------------------------------


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


# -- delivery health ---------------------------------------------------------------------


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


# -- mailbox providers ---------------------------------------------------------------------


def _domain_rows(warehouse, start: date, end: date, category: str | None) -> pd.DataFrame:
    from .breakdown import read_domain_outcomes
    from .mailbox import add_mailbox_column

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
    from .mailbox import OTHER, UNKNOWN

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


# -- recipient domains ranked by rate ------------------------------------------------------

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


# -- bounces --------------------------------------------------------------------------


def bounce_classes(daily: pd.DataFrame) -> pd.DataFrame:
    """Per day: bounced recipients by class (hard, soft, undetermined, block)."""
    cols = {
        "bounces_hard": "hard",
        "bounces_soft": "soft",
        "bounces_undetermined": "undetermined",
        "blocks": "block",
    }
    present = [c for c in cols if c in daily.columns]
    return daily.groupby("event_date")[present].sum().rename(columns=cols)


#: RFC 3463 enhanced status code: class.subject.detail (class 2, 4 or 5).
ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
#: What the common subject.detail pairs mean (RFC 3463, RFC 7372 for X.7.2x).
CODE_MEANING = {
    "0.0": "other undefined status",
    "1.0": "other address status",
    "1.1": "bad destination mailbox (no such user)",
    "1.2": "bad destination system (no such domain)",
    "1.3": "bad destination mailbox address syntax",
    "1.6": "mailbox has moved",
    "2.0": "other or undefined mailbox status",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full",
    "2.3": "message length exceeds administrative limit",
    "3.0": "other or undefined mail system status",
    "3.4": "message too big for system",
    "4.0": "other network or routing status",
    "4.1": "no answer from host",
    "4.4": "unable to route",
    "4.7": "delivery time expired",
    "5.0": "other protocol status",
    "7.0": "other security status",
    "7.1": "delivery not authorized, message refused (policy, blocklist)",
    "7.25": "reverse DNS validation failed",
    "7.26": "multiple authentication checks failed",
}
#: The row of bounces whose provider gave no enhanced status code.
NO_CODE = "(no code)"


def enhanced_status_code(*texts: str | None) -> str | None:
    """The first RFC 3463 code (``5.1.1``) in ``texts`` (e.g. smtp_status, then reason):
    ``'550 5.1.1 user unknown'`` -> ``'5.1.1'``; CMC's own status numbers (``'2'``) and
    texts without a code -> None."""
    for t in texts:
        if t:
            m = ENHANCED_CODE.search(str(t))
            if m:
                return ".".join(str(int(g)) for g in m.groups())
    return None


#: CMC reports its own bounce status numbers (pipelines/normalizers/cmc.py) and often no
#: SMTP text; the ones whose documented meaning is one RFC 3463 code are grouped under it
#: (3 retransmission timeout, 6 forward error, 7 receiving server error and 99 other are
#: not one code and stay "(no code)").
CMC_STATUS_CODE = {
    "1": "5.1.2",  # unknown host
    "2": "5.1.1",  # unknown user
    "4": "5.7.1",  # rejected by the receiver's policy
    "5": "4.2.2",  # over capacity (mailbox full)
    "8": "5.3.4",  # oversized message
}


def status_code_of(
    provider: str | None, smtp_status: str | None, reason: str | None
) -> tuple[str, str]:
    """(code, basis) of one bounce: the RFC 3463 code the provider reported (in
    smtp_status or the reason text; basis ``reported``), else CMC's status number mapped
    by :data:`CMC_STATUS_CODE` (basis ``cmc status N``), else :data:`NO_CODE`."""
    code = enhanced_status_code(smtp_status, reason)
    if code:
        return code, "reported"
    if provider == "cmc" and smtp_status is not None:
        from .normalizers.cmc import status_code

        n = status_code(str(smtp_status))
        if n in CMC_STATUS_CODE:
            return CMC_STATUS_CODE[n], f"cmc status {n}"
    return NO_CODE, "none"


def code_meaning(code: str | None) -> str:
    if not code or code == NO_CODE:
        return "no enhanced status code given; see the reasons"
    cls, subject_detail = code.split(".", 1)
    kind = {"2": "success", "4": "transient", "5": "permanent"}[cls]
    return f"{kind}: {CODE_MEANING.get(subject_detail, 'see RFC 3463')}"


def bounce_reasons(
    warehouse=None, start: date | None = None, end: date | None = None, category: str | None = None
) -> pd.DataFrame:
    """Bounced recipients (provider, message, recipient), each ONCE, grouped by provider,
    reason, smtp_status and bounce class: ``recipients`` and ``events`` (all bounce
    events of those recipients). A recipient reported twice (CMC: a failed delivery,
    classed undetermined and without a code, and a bounce with both) is represented by
    its most informative event: one with an enhanced status code, then one with a
    class other than undetermined, then the first."""
    wh = open_configured(warehouse)
    start, end = data_window(wh, start, end)
    code_re = r"(^|[^0-9.])[245][.][0-9]{1,3}[.][0-9]{1,3}([^0-9.]|$)"
    sql = f"""
        WITH bounced AS (
          SELECT provider, reason, smtp_status, IFNULL(bounce_class, 'undetermined') AS bounce_class,
                 COUNT(*) OVER (PARTITION BY provider, message_id, email_hash) AS events
          FROM events
          WHERE event_date BETWEEN @start_date AND @end_date AND event_type = 'bounce'
                {_category_filter(category)}
          QUALIFY ROW_NUMBER() OVER (
            PARTITION BY provider, message_id, email_hash
            ORDER BY IF(REGEXP_CONTAINS(CONCAT(IFNULL(smtp_status, ''), ' ', IFNULL(reason, '')),
                                        @code_re), 0, 1),
                     IF(IFNULL(bounce_class, 'undetermined') = 'undetermined', 1, 0),
                     event_ts, event_id) = 1)
        SELECT provider, reason, smtp_status, bounce_class,
               COUNT(*) AS recipients, SUM(events) AS events
        FROM bounced
        GROUP BY provider, reason, smtp_status, bounce_class
        ORDER BY recipients DESC, provider, reason"""
    df = wh.query_df(
        sql, _params(start_date=start, end_date=end, category=category, code_re=code_re)
    )
    for c in ("recipients", "events"):
        df[c] = df[c].astype("int64")
    return df


def bounce_codes(reasons: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """:func:`bounce_reasons` grouped by enhanced status code across providers: one row
    per code (``(no code)`` per reason text where the provider gave none), with its
    meaning, ``recipients``, ``events``, the ``providers`` that reported it, the
    ``bounce_classes`` they gave it, ``code_basis`` (``reported``, or ``cmc status N``
    where CMC gave only its own number, :func:`status_code_of`), and one example
    reason. Most recipients first."""
    cols = [
        "status_code",
        "meaning",
        "recipients",
        "events",
        "providers",
        "bounce_classes",
        "code_basis",
        "example_reason",
    ]
    if reasons.empty:
        return pd.DataFrame(columns=cols)
    df = reasons.copy()
    found = [
        status_code_of(p, s, r) for p, s, r in zip(df["provider"], df["smtp_status"], df["reason"])
    ]
    df["status_code"] = [c for c, _ in found]
    df["code_basis"] = [b for _, b in found]
    # without a code, the reason text is all there is: keep those apart per reason
    # (pandas cannot group on strings holding NUL, so the key is code + reason, or code)
    df["_key"] = [
        c if c != NO_CODE else f"{c} {(r or '').strip().lower()}"
        for c, r in zip(df["status_code"], df["reason"])
    ]
    rows = []
    for _, g in df.groupby("_key", sort=False):
        g = g.sort_values("recipients", ascending=False)
        code = g["status_code"].iloc[0]
        rows.append(
            {
                "status_code": code,
                "meaning": code_meaning(code),
                "recipients": int(g["recipients"].sum()),
                "events": int(g["events"].sum()),
                "providers": ",".join(sorted(set(g["provider"]))),
                "bounce_classes": ",".join(sorted(set(g["bounce_class"]))),
                "code_basis": ",".join(sorted(set(g["code_basis"]))),
                "example_reason": g["reason"].dropna().iloc[0] if g["reason"].notna().any() else "",
            }
        )
    out = (
        pd.DataFrame(rows, columns=cols)
        .sort_values(["recipients", "status_code"], ascending=[False, True])
        .reset_index(drop=True)
    )
    return out.head(n) if n else out


def top_bounce_reasons(
    warehouse=None,
    start: date | None = None,
    end: date | None = None,
    category: str | None = None,
    n: int = 10,
) -> pd.DataFrame:
    """The most frequent bounce reasons as the providers word them (each bounced
    recipient once, see :func:`bounce_reasons`), with their status code, classes and
    providers."""
    df = bounce_reasons(warehouse, start, end, category)
    cols = ["reason", "status_code", "recipients", "events", "bounce_classes", "providers"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["reason"] = df["reason"].fillna("(no reason given)")
    df["status_code"] = [
        status_code_of(p, s, r)[0]
        for p, s, r in zip(df["provider"], df["smtp_status"], df["reason"])
    ]
    out = df.groupby(["reason", "status_code"], as_index=False).agg(
        recipients=("recipients", "sum"),
        events=("events", "sum"),
        bounce_classes=("bounce_class", lambda s: ",".join(sorted(set(s)))),
        providers=("provider", lambda s: ",".join(sorted(set(s)))),
    )
    return (
        out.sort_values(["recipients", "reason"], ascending=[False, True])
        .head(n)
        .reset_index(drop=True)[cols]
    )


def suppressions_growth(
    warehouse=None, start: date | None = None, end: date | None = None
) -> pd.DataFrame:
    """Per day and reason: recipients suppressed for the first time (``new``) and the
    running total of suppressed recipients (``total``, every reason together, counting
    recipients first suppressed before ``start`` as the starting level)."""
    wh = open_configured(warehouse)
    start, end = resolve_window(wh, start, end, table="suppressions")
    firsts = wh.query_df(
        """
        WITH firsts AS (
          SELECT email_hash, event_date, reason
          FROM suppressions
          WHERE event_date <= @end_date
          QUALIFY ROW_NUMBER() OVER (PARTITION BY email_hash ORDER BY event_date, reason) = 1)
        SELECT event_date, reason, COUNT(*) AS new
        FROM firsts GROUP BY event_date, reason ORDER BY event_date, reason""",
        {"end_date": end},
    )
    days = pd.date_range(start, end, freq="D")
    if firsts.empty:
        return pd.DataFrame({"new": 0, "total": 0}, index=days).rename_axis("event_date")
    firsts["event_date"] = pd.to_datetime(firsts["event_date"])
    before = int(firsts.loc[firsts["event_date"] < pd.Timestamp(start), "new"].sum())
    table = (
        firsts[firsts["event_date"] >= pd.Timestamp(start)]
        .pivot_table(index="event_date", columns="reason", values="new", aggfunc="sum")
        .reindex(days, fill_value=0)
        .fillna(0)
        .astype("int64")
    )
    table.index.name = "event_date"
    table.columns.name = None
    table["new"] = table.sum(axis=1)
    table["total"] = before + table["new"].cumsum()
    return table


def plot_bounces(
    classes: pd.DataFrame,
    domains: pd.DataFrame,
    growth: pd.DataFrame,
    codes: pd.DataFrame | None = None,
):
    """Panels: bounce classes per day, the domains ranked by rate (with their volume),
    bounced recipients per enhanced status code (when ``codes`` is given), suppressions
    growth."""
    import matplotlib.pyplot as plt

    n = 4 if codes is not None else 3
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.7 * n))
    if not classes.empty:
        c = classes.copy()
        c.index = [pd.Timestamp(d).strftime("%m-%d") for d in c.index]
        c.plot(kind="bar", stacked=True, ax=axes[0], width=0.8)
    axes[0].set_title("bounced recipients per day by class")
    rate = domains.attrs.get("rate", "bounce_rate")
    if not domains.empty:
        labels = [
            f"{d} ({r:,} req)" for d, r in zip(domains["recipient_domain"], domains["requests"])
        ]
        axes[1].barh(labels, domains[rate].fillna(0).to_numpy(), color="tab:red")
        axes[1].invert_yaxis()
        axes[1].xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    num, den = RATES.get(rate, (rate, ""))
    axes[1].set_title(
        f"domains ranked by {rate} = {num} / {den} "
        f"(at least {domains.attrs.get('min_requests', 0)} requests)"
    )
    panel = 2
    if codes is not None:
        if not codes.empty:
            top = codes.head(10)
            axes[2].barh(
                [f"{c} ({p})" for c, p in zip(top["status_code"], top["providers"])],
                top["recipients"].to_numpy(),
                color="tab:purple",
            )
            axes[2].invert_yaxis()
        axes[2].set_title("bounced recipients by enhanced status code, all providers")
        panel = 3
    ax = axes[panel]
    reasons = [c for c in growth.columns if c not in ("new", "total")]
    if reasons:
        g = growth[reasons].copy()
        g.index = [pd.Timestamp(d).strftime("%m-%d") for d in g.index]
        g.plot(kind="bar", stacked=True, ax=ax, width=0.8, alpha=0.7)
    ax2 = ax.twinx()
    ax2.plot(
        range(len(growth)),
        growth["total"].to_numpy(),
        color="black",
        marker="o",
        label="total suppressed",
    )
    ax2.set_ylabel("total suppressed")
    ax2.legend(loc="upper right")  # the bars' legend (reasons) keeps the upper left
    ax.set_title("suppressions: new per day by reason, and the running total")
    for a in axes:
        a.grid(alpha=0.3)
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


def send_window(
    warehouse=None,
    category: str | None = None,
    send_start=None,
    send_end=None,
    day: date | None = None,
) -> SendWindow:
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
        day = (
            start_ts.date()
            if start_ts
            else resolve_window(wh, None, None, table="recipient_status")[1]
        )
    if not category:
        top = wh.query_df(
            """
            SELECT category, COUNT(*) AS recipients
            FROM recipient_status, UNNEST(categories) AS category
            WHERE event_date = @day GROUP BY category ORDER BY recipients DESC, category LIMIT 1""",
            {"day": day},
        )
        if top.empty:
            raise ConfigurationError(f"no recipients on {day}: set CATEGORY and the send window")
        category = str(top["category"][0])
    found = wh.query_df(
        """
        SELECT MIN(first_event_ts) AS first_ts, MAX(first_event_ts) AS last_ts
        FROM recipient_status
        WHERE event_date = @day AND @category IN UNNEST(categories)""",
        {"day": day, "category": category},
    )
    if found.empty or pd.isna(found["first_ts"][0]):
        raise ConfigurationError(
            f"category {category!r} has no recipients on {day}; "
            "check CATEGORY or set SEND_START / SEND_END"
        )
    return SendWindow(
        category, start_ts or _utc(found["first_ts"][0]), end_ts or _utc(found["last_ts"][0])
    )


#: How long after the send window opens and clicks are followed by default.
DEFAULT_HOURS_AFTER = 72


def campaign_recipients(
    warehouse, window: SendWindow, hours_after: int = DEFAULT_HOURS_AFTER
) -> pd.DataFrame:
    """recipient_status rows of the campaign (recipients whose first send event falls in
    the window and whose categories include the campaign's), each with its mailbox
    provider and whether it ``opened`` / ``clicked`` (any open / click event of that
    provider, message and recipient up to ``hours_after`` hours after the window)."""
    from .mailbox import add_mailbox_column

    wh = open_configured(warehouse)
    until = window.end + timedelta(hours=hours_after)
    df = wh.query_df(
        """
        WITH engaged AS (
          SELECT provider, IFNULL(message_id, '') AS mid, IFNULL(email_hash, '') AS eh,
                 COUNTIF(event_type = 'open') > 0 AS opened,
                 COUNTIF(event_type = 'click') > 0 AS clicked
          FROM events
          WHERE event_date BETWEEN @start_day AND @until_day
            AND event_ts BETWEEN @start_ts AND @until_ts
            AND event_type IN ('open', 'click')
          GROUP BY provider, mid, eh)
        SELECT r.provider, r.message_id, r.email_hash, r.recipient_domain, r.status, r.settled,
               r.bounce_class, r.reason, r.first_event_ts, r.delivered_ts, r.status_event_ts,
               r.deferred_count, IFNULL(e.opened, FALSE) AS opened,
               IFNULL(e.clicked, FALSE) AS clicked
        FROM recipient_status AS r
        LEFT JOIN engaged AS e
          ON e.provider = r.provider AND e.mid = IFNULL(r.message_id, '')
             AND e.eh = IFNULL(r.email_hash, '')
        WHERE r.event_date BETWEEN @start_day AND @end_day
          AND r.first_event_ts BETWEEN @start_ts AND @end_ts
          AND @category IN UNNEST(r.categories)""",
        {
            "start_day": window.start.date(),
            "end_day": window.end.date(),
            "until_day": until.date(),
            "start_ts": window.start,
            "end_ts": window.end,
            "until_ts": until,
            "category": window.category,
        },
    )
    for c in ("opened", "clicked"):
        df[c] = df[c].astype(bool)
    return add_mailbox_column(df)


#: Funnel stages in order; each is a subset of the one before.
FUNNEL_STAGES = ("sent", "delivered", "opened", "clicked")


def campaign_funnel(recipients: pd.DataFrame) -> pd.DataFrame:
    """sent -> delivered -> opened -> clicked, recipients per stage, each stage a subset
    of the one before: ``sent`` every recipient of :func:`campaign_recipients`;
    ``delivered`` those with a delivered event (a later bounce does not undo it);
    ``opened`` delivered recipients with an open or a click (a click proves an open the
    tracking pixel missed); ``clicked`` delivered recipients with a click.
    ``share_of_sent`` and ``share_of_previous`` divide by those stages."""
    if recipients.empty:
        counts = [0, 0, 0, 0]
    else:
        if not {"opened", "clicked"} <= set(recipients.columns):
            raise ConfigurationError(
                "campaign_funnel needs the opened / clicked columns of "
                "frames.campaign_recipients(wh, window); recipient_status rows alone have "
                "no engagement"
            )
        delivered = recipients["delivered_ts"].notna()
        opened = delivered & (recipients["opened"] | recipients["clicked"])
        clicked = delivered & recipients["clicked"]
        counts = [len(recipients), int(delivered.sum()), int(opened.sum()), int(clicked.sum())]
    s = pd.Series(counts, index=pd.Index(FUNNEL_STAGES, name="stage"), dtype="int64")
    sent = s.iloc[0]
    prev = s.shift(1).fillna(s.iloc[0]).astype("float64")
    return pd.DataFrame(
        {
            "recipients": s,
            "share_of_sent": s / sent if sent else s * 0.0,
            "share_of_previous": (s / prev.where(prev > 0)).astype("float64"),
        }
    )


def campaign_funnels(
    warehouse=None, start: date | None = None, end: date | None = None, follow_days: int = 3
) -> pd.DataFrame:
    """The :func:`campaign_funnel` of every category (campaign) whose recipients were first
    sent to in [start, end] (``recipient_status``), opens and clicks followed up to
    ``follow_days`` days after ``end``: one row per category with ``sent``,
    ``delivered``, ``opened``, ``clicked`` and ``delivered_share`` (of sent),
    ``open_share`` (opened / delivered), ``click_share`` (clicked / delivered). Most
    recipients first."""
    wh = open_configured(warehouse)
    start, end = data_window(wh, start, end)
    df = wh.query_df(
        """
        WITH engaged AS (
          SELECT provider, IFNULL(message_id, '') AS mid, IFNULL(email_hash, '') AS eh,
                 COUNTIF(event_type = 'open') > 0 AS opened,
                 COUNTIF(event_type = 'click') > 0 AS clicked
          FROM events
          WHERE event_date BETWEEN @start_date AND @until_day
            AND event_type IN ('open', 'click')
          GROUP BY provider, mid, eh),
        r AS (
          SELECT category, r.delivered_ts IS NOT NULL AS delivered,
                 IFNULL(e.opened, FALSE) AS opened, IFNULL(e.clicked, FALSE) AS clicked
          FROM recipient_status AS r
          LEFT JOIN engaged AS e
            ON e.provider = r.provider AND e.mid = IFNULL(r.message_id, '')
               AND e.eh = IFNULL(r.email_hash, ''),
          UNNEST(IF(IFNULL(ARRAY_LENGTH(r.categories), 0) = 0, ['(none)'], r.categories)) AS category
          WHERE r.event_date BETWEEN @start_date AND @end_date)
        SELECT category, COUNT(*) AS sent, COUNTIF(delivered) AS delivered,
               COUNTIF(delivered AND (opened OR clicked)) AS opened,
               COUNTIF(delivered AND clicked) AS clicked
        FROM r GROUP BY category ORDER BY sent DESC, category""",
        {"start_date": start, "end_date": end, "until_day": end + timedelta(days=follow_days)},
    )
    for c in FUNNEL_STAGES:
        df[c] = df[c].astype("int64")
    df["delivered_share"] = df["delivered"] / df["sent"].where(df["sent"] > 0)
    df["open_share"] = df["opened"] / df["delivered"].where(df["delivered"] > 0)
    df["click_share"] = df["clicked"] / df["delivered"].where(df["delivered"] > 0)
    return df.reset_index(drop=True)


def campaign_statuses(recipients: pd.DataFrame) -> pd.DataFrame:
    """Recipients per settled status with their share (statuses that end the wait first)."""
    order = ["delivered", "bounce", "dropped", "deferred", "processed"]
    counts = recipients["status"].value_counts().reindex(order, fill_value=0)
    total = int(counts.sum())
    return pd.DataFrame(
        {"recipients": counts.astype("int64"), "share": counts / total if total else counts * 0.0}
    )


def time_to_deliver(recipients: pd.DataFrame) -> pd.Series:
    """Minutes from the first send event to delivery, for delivered recipients."""
    d = recipients.dropna(subset=["delivered_ts"])
    minutes = (
        pd.to_datetime(d["delivered_ts"], utc=True) - pd.to_datetime(d["first_event_ts"], utc=True)
    ).dt.total_seconds() / 60
    return minutes.rename("minutes_to_deliver")


def campaign_timeline(
    warehouse, window: SendWindow, hours_after: int = DEFAULT_HOURS_AFTER
) -> pd.DataFrame:
    """Events per hour and type for the campaign's category from the window's start to
    ``hours_after`` hours after its end (through the last hour with an event)."""
    wh = open_configured(warehouse)
    until = window.end + timedelta(hours=hours_after)
    df = wh.query_df(
        """
        SELECT TIMESTAMP_TRUNC(event_ts, HOUR) AS hour, event_type, COUNT(*) AS events
        FROM events
        WHERE event_date BETWEEN @start_day AND @end_day
          AND event_ts BETWEEN @start_ts AND @until_ts
          AND @category IN UNNEST(categories)
        GROUP BY hour, event_type ORDER BY hour, event_type""",
        {
            "start_day": window.start.date(),
            "end_day": until.date(),
            "start_ts": window.start,
            "until_ts": until,
            "category": window.category,
        },
    )
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(
        index="hour", columns="event_type", values="events", aggfunc="sum", fill_value=0
    )


def campaign_breakdown(
    recipients: pd.DataFrame, by: str = "recipient_domain", n: int = 10
) -> pd.DataFrame:
    """Per ``by`` (recipient_domain, mailbox_provider, provider): recipients, each
    status, the funnel (delivered, opened, clicked as in :func:`campaign_funnel`) and
    bounce_rate = bounce / recipients, most recipients first."""
    if recipients.empty:
        return pd.DataFrame()
    t = recipients.pivot_table(
        index=by, columns="status", values="email_hash", aggfunc="count", fill_value=0
    )
    t.columns.name = None
    t["recipients"] = t.sum(axis=1)
    if "opened" in recipients.columns:
        r = recipients.assign(_d=recipients["delivered_ts"].notna())
        r["_o"] = r["_d"] & (r["opened"] | r["clicked"])
        r["_c"] = r["_d"] & r["clicked"]
        f = r.groupby(by)[["_d", "_o", "_c"]].sum().astype("int64")
        t["ever_delivered"] = f["_d"]
        t["opened"] = f["_o"]
        t["clicked"] = f["_c"]
        t["open_rate"] = t["opened"] / t["ever_delivered"].where(t["ever_delivered"] > 0)
    t["bounce_rate"] = t.get("bounce", 0) / t["recipients"]
    return t.sort_values(["recipients"], ascending=False).head(n)


def plot_campaign(
    window: SendWindow, funnel: pd.DataFrame, timeline: pd.DataFrame, minutes: pd.Series
):
    """Three panels: the sent -> delivered -> opened -> clicked funnel, events per hour,
    time to delivery."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 11))
    funnel["recipients"].plot(kind="barh", ax=axes[0], color="tab:blue")
    axes[0].invert_yaxis()
    for i, (v, share) in enumerate(zip(funnel["recipients"], funnel["share_of_sent"])):
        axes[0].annotate(
            f"{v:,} ({share:.1%})", (v, i), xytext=(4, 0), textcoords="offset points", va="center"
        )
    axes[0].set_title(f"funnel: {window.describe()}")
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


#: The notebooks' frames and figures (what ``from pipelines.frames import *`` gives).
__all__ = [
    "data_window",
    "trim_empty_tail",
    "delivery_health",
    "top_categories",
    "rate_table",
    "stacked_outcomes",
    "category_summary",
    "plot_rates",
    "plot_stacked_outcomes",
    "mailbox_daily",
    "mailbox_summary",
    "top_mailboxes",
    "plot_mailbox_rates",
    "DEFAULT_MIN_REQUESTS",
    "domain_ranking",
    "bounce_domains",
    "bounce_classes",
    "ENHANCED_CODE",
    "CODE_MEANING",
    "NO_CODE",
    "CMC_STATUS_CODE",
    "enhanced_status_code",
    "status_code_of",
    "code_meaning",
    "bounce_reasons",
    "bounce_codes",
    "top_bounce_reasons",
    "suppressions_growth",
    "plot_bounces",
    "SendWindow",
    "send_window",
    "DEFAULT_HOURS_AFTER",
    "campaign_recipients",
    "FUNNEL_STAGES",
    "campaign_funnel",
    "campaign_funnels",
    "campaign_statuses",
    "time_to_deliver",
    "campaign_timeline",
    "campaign_breakdown",
    "plot_campaign",
]
