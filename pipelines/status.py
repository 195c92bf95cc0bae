"""Forward-only recipient status: one definition for the watcher and the SQL.

A recipient's status for a message moves to a more final state, never back: a late
``delivered`` does not undo a ``bounce``, a late ``deferred`` does not undo a
``delivered``. The status is the event with the highest rank; ties go to the latest.
"""

from __future__ import annotations

#: canonical event_type -> rank; higher is more final. Engagement events (open, click,
#: spamreport, unsubscribe) imply delivery but never override a bounce or drop.
STATUS_RANK = {
    "processed": 1,
    "deferred": 2,
    "delivered": 3,
    "open": 3,
    "click": 3,
    "spamreport": 3,
    "unsubscribe": 3,
    "group_unsubscribe": 3,
    "group_resubscribe": 3,
    "dropped": 4,
    "bounce": 5,
}

#: The status a ranked event puts the recipient in (engagement means delivered).
STATUS_OF_EVENT = {
    "processed": "processed",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "delivered",
    "click": "delivered",
    "spamreport": "delivered",
    "unsubscribe": "delivered",
    "group_unsubscribe": "delivered",
    "group_resubscribe": "delivered",
    "dropped": "dropped",
    "bounce": "bounce",
}

#: Statuses that end the wait: the recipient's fate is known.
SETTLED = frozenset({"delivered", "bounce", "dropped"})


def rank_case_sql(column: str = "event_type") -> str:
    """``CASE`` expression (BigQuery and DuckDB alike) giving STATUS_RANK of ``column``."""
    whens = " ".join(f"WHEN '{k}' THEN {v}" for k, v in STATUS_RANK.items())
    return f"(CASE {column} {whens} ELSE 0 END)"


def status_case_sql(column: str = "event_type") -> str:
    """``CASE`` expression giving STATUS_OF_EVENT of ``column`` (NULL for unranked)."""
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in STATUS_OF_EVENT.items())
    return f"(CASE {column} {whens} ELSE NULL END)"


def advance(current_rank: int, event_type: str) -> tuple[int, str] | None:
    """One forward-only step, for code that folds events in time order (as the SQL's
    ``QUALIFY ... ORDER BY rank DESC, event_ts DESC`` does): the (rank, status) the event
    moves the recipient to, or None when it does not move it (unranked, or less final;
    an equally final later event wins the tie)."""
    rank = STATUS_RANK.get(event_type, 0)
    if rank and rank >= current_rank:
        return rank, STATUS_OF_EVENT[event_type]
    return None
