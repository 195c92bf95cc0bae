"""Campaign post-mortem: one send window (a category's first to last send event), its
recipients with their engagement, the sent -> delivered -> opened -> clicked funnel (each
stage a subset of the one before), statuses, timeline, breakdowns and the figure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd

from ..analysis import ConfigurationError, open_configured, resolve_window
from .window import data_window


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
    from ..mailbox import add_mailbox_column

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
