"""The watch report: what a finished watch looks like as one line of text, as Slack Block
Kit, and as the CSV of failed recipients. Rendering only; the transport (pipelines/slack.py)
posts it, the watcher (pipelines/watcher.py) produces the result (pipelines/watch_result.py)."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from .timeutil import format_duration, rfc3339

if TYPE_CHECKING:  # pragma: no cover
    from .watch_result import WatchResult


def _pct(result: "WatchResult", key: str) -> str:
    r = result.rate(key)
    return "" if r is None else f" ({r:.1%})"


def _pct_of(result: "WatchResult", k: int) -> str:
    return f" ({k / result.recipients:.1%})" if result.recipients else ""


def _trunc(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def summary_text(result: "WatchResult") -> str:
    """The one-line notification text (and the fallback where blocks are not shown)."""
    c = result.counts
    state = "settled" if result.settled else f"TIMED OUT after {format_duration(result.elapsed)}"
    return (
        f"mailpulse watch {result.category}: {state} - {result.recipients} recipients, "
        f"{c['delivered']} delivered, {c['bounce']} bounced, {c['dropped']} dropped, "
        f"{c['deferred']} deferred, {c['unsettled']} unsettled"
        + (
            f", {len(_never_reported(result))} sent but never reported by the provider"
            if _never_reported(result)
            else ""
        )
    )


def _never_reported(result: "WatchResult") -> list[str]:
    return list(getattr(result, "never_reported", []) or [])


def watch_blocks(result: "WatchResult") -> list[dict[str, Any]]:
    """Block Kit for one watch (within Slack's limits: header 150 chars, 10 fields)."""
    c, bc = result.counts, result.bounce_classes
    if result.settled:
        state = f":white_check_mark: settled after {format_duration(result.elapsed)}"
    else:
        state = (
            f":hourglass: *timed out* after {format_duration(result.elapsed)}: "
            f"{c['unsettled']} recipients not settled; counts are what was known then"
        )
    fields = [
        f"*Recipients*\n{result.recipients}",
        f"*Delivered*\n{c['delivered']}{_pct(result, 'delivered')}",
        f"*Bounced*\n{c['bounce']}{_pct(result, 'bounce')}\n"
        f"hard {bc['hard']} / soft {bc['soft']} / block {bc['block']}"
        + (f" / undetermined {bc['undetermined']}" if bc["undetermined"] else ""),
        f"*Dropped*\n{c['dropped']}{_pct(result, 'dropped')}",
        f"*Deferred*\n{c['deferred']}{_pct(result, 'deferred')}",
        f"*Unsettled*\n{c['unsettled']}{_pct(result, 'unsettled')}\n"
        f"never seen {len(result.never_seen)}",
    ]
    never = _never_reported(result)
    if never:  # at the timeout: sent, and the provider reported nothing at all for them
        fields.append(
            f"*Never reported*\n{len(never)}{_pct_of(result, len(never))}\n"
            "sent, never reported by the provider"
        )
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "emoji": True,
                "text": _trunc(f"Send watch: {result.category}", 150),
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": state}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    hint = getattr(result, "hint", None)
    if hint:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _trunc(f":mag: {hint}", 3000)}}
        )
    reasons = result.top_reasons(5)
    if reasons:
        lines = "\n".join(f"• {k} × {_trunc(r, 300)}" for r, k in reasons)
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _trunc(f"*Top reasons (bounced and dropped)*\n{lines}", 3000),
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _trunc(
                        f"category `{result.category}` · sent since {rfc3339(result.since)} · "
                        + (
                            f"send `{result.send_id}` · "
                            if getattr(result, "send_id", None)
                            else ""
                        )
                        + f"{result.polls} polls · rates divide by recipients"
                        + (
                            (
                                " · failed recipients' hashes in the thread (CSV; resumed from the send log)"
                                if getattr(result, "by_hash", False)
                                else " · failed recipients' addresses in the thread (CSV)"
                            )
                            if result.failed
                            else ""
                        ),
                        3000,
                    ),
                }
            ],
        }
    )
    return blocks


CSV_COLUMNS = ("email", "status", "bounce_class", "reason", "smtp_status", "event_ts", "provider")


def csv_filename(result: "WatchResult") -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in result.category)
    return f"failed-recipients-{safe[:80]}.csv"


def failed_recipients_csv(result: "WatchResult") -> str:
    """Bounced and dropped recipients: the caller's own addresses (mapped back from the
    hashes locally; nothing is read back from the warehouse but status and reason)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for o in result.failed:
        w.writerow(
            [
                o.email,
                o.status,
                o.bounce_class or "",
                o.reason or "",
                o.smtp_status or "",
                rfc3339(o.event_ts) if o.event_ts else "",
                o.provider or "",
            ]
        )
    return buf.getvalue()
