"""Time in one place: UTC parsing and formatting shared by the watcher, the commands,
the Slack report and the event schema. Everything is UTC, everywhere."""

from __future__ import annotations

from datetime import date, datetime, timezone


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` (microseconds only when present)."""
    ts = ts.astimezone(timezone.utc)
    if ts.microsecond:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_utc(timestamp: "datetime | date | str | int | float") -> datetime:
    """An aware UTC datetime. Naive datetimes are taken as UTC; a date is its midnight
    UTC; strings are ISO 8601 (``...Z`` allowed) or epoch seconds; numbers epoch seconds."""
    if isinstance(timestamp, datetime):
        ts = timestamp
    elif isinstance(timestamp, date):
        ts = datetime(timestamp.year, timestamp.month, timestamp.day)
    elif isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        return datetime.fromtimestamp(timestamp, tz=timezone.utc)
    elif isinstance(timestamp, str):
        v = timestamp.strip()
        try:
            return datetime.fromtimestamp(float(v), tz=timezone.utc)
        except ValueError:
            pass
        if v.endswith(("Z", "z")):
            v = v[:-1] + "+00:00"
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(
                f"{timestamp!r} is not a timestamp; use ISO 8601 such as "
                "2026-11-23T10:00:00Z, a datetime, or epoch seconds"
            ) from None
    else:
        raise TypeError(
            f"timestamp must be a datetime, date, ISO string or epoch seconds, "
            f"not {type(timestamp).__name__}"
        )
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def format_duration(seconds: float) -> str:
    """``4.2s``, ``42s``, ``3m05s``, ``2h07m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
