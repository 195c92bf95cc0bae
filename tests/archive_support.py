"""Small archives with known rates, written in SendGrid's Event Webhook format
(one POST body, a JSON array, per line) under ``<archive>/sendgrid/YYYY/MM/DD/HH/``.

The DAG test needs exact numbers (which category breaches which threshold), so these
archives are built from a spec rather than sampled: for each category, how many
recipients were sent to, how many bounced (and how many of those were blocks), how many
of the delivered reported spam, and how many opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

REASONS = (
    "550 5.1.1 The email account that you tried to reach does not exist",
    "552 5.2.2 Mailbox full",
    "550 5.7.1 Message rejected due to local policy",
)
DOMAINS = ("gmail.com", "yahoo.co.jp", "outlook.com", "example.org")


@dataclass(frozen=True)
class CategorySpec:
    recipients: int
    bounces: int = 0  # hard bounces (type "bounce")
    blocks: int = 0  # bounces with type "blocked"
    spam_reports: int = 0  # among the delivered
    opens: int = 0  # among the delivered
    deferred: int = 0  # delivered after one deferral


def sendgrid_events(day: date, category: str, spec: CategorySpec, hour: int = 10) -> list[dict]:
    """The events of one send to ``spec.recipients`` addresses on ``day``."""
    base = datetime.combine(day, time(hour), tzinfo=timezone.utc)
    out: list[dict] = []
    failed = spec.bounces + spec.blocks
    for i in range(spec.recipients):
        email = f"{category}-{i}@{DOMAINS[i % len(DOMAINS)]}"
        mid = f"{category}{day:%Y%m%d}{i:06d}"
        sg_mid = f"{mid}.filter0001.1.{i}.0"
        ts = base + timedelta(seconds=i)
        n = 0

        def ev(kind: str, offset: int, **extra) -> None:
            nonlocal n
            n += 1
            out.append(
                {
                    "email": email,
                    "timestamp": int((ts + timedelta(seconds=offset)).timestamp()),
                    "event": kind,
                    "sg_event_id": f"{mid}-{n}-{kind}",
                    "sg_message_id": sg_mid,
                    "category": [category],
                    **extra,
                }
            )

        ev("processed", 0)
        if i < failed:
            kind = "blocked" if i < spec.blocks else "bounce"
            ev("bounce", 30, type=kind, status="5.1.1", reason=REASONS[i % len(REASONS)])
            continue
        j = i - failed
        if j < spec.deferred:
            ev("deferred", 20, attempt="1", response="451 4.7.1 try again later")
        ev("delivered", 60, response="250 OK")
        if j < spec.opens:
            ev("open", 600, useragent="Mozilla/5.0")
        if j < spec.spam_reports:
            ev("spamreport", 900)
    return out


def write_sendgrid_day(
    archive: Path, day: date, categories: dict[str, CategorySpec], hour: int = 10, batch: int = 200
) -> list[Path]:
    """Writes the day's events as webhook POST bodies (``batch`` events each, one per
    line) and returns the files written."""
    events = [e for cat, spec in categories.items() for e in sendgrid_events(day, cat, spec, hour)]
    folder = Path(archive) / "sendgrid" / f"{day:%Y/%m/%d}" / f"{hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"webhook-{day:%Y%m%d}-{hour:02d}.json"
    with path.open("w", encoding="utf-8") as fh:
        for k in range(0, len(events), batch):
            fh.write(json.dumps(events[k : k + batch]) + "\n")
    return [path]
