"""Bounces: bounced recipients per day by class, grouped by reason and by enhanced status
code (:mod:`.status_codes`) across providers, each recipient counted once (CMC reports a
failure twice, as a failed delivery and as a bounce), the growth of suppressions, and the
figure."""

from __future__ import annotations

from datetime import date

import pandas as pd

from ..analysis import RATES, _category_filter, _params, open_configured, resolve_window
from .status_codes import NO_CODE, code_meaning, status_code_of
from .window import data_window


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
