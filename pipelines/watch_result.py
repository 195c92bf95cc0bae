"""The result of a watch: each recipient's outcome, what is known about the send
(:class:`WatchResult`: counts, rates, reasons, the console summary, the JSON), and the two
ways a watch ends badly (:class:`WatchTimeout`, :class:`WatchFailed`), each carrying the
result. The polling that produces it is :mod:`pipelines.watcher`."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .status import SETTLED
from .timeutil import format_duration, rfc3339
from .warehouse import WarehouseError

#: The keys of :func:`wait_for_events`' result, in order (DESIGN.md, "Watcher counts").
COUNT_KEYS = ("delivered", "bounce", "dropped", "deferred", "unsettled")

# -- masking -------------------------------------------------------------------------------
_ADDRESS = re.compile(r"<?[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+>?")


def mask_addresses(text: str) -> str:
    return _ADDRESS.sub("<address>", text)


# (shared with the Slack report and the commands: pipelines/timeutil.py)
_iso = rfc3339


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipientOutcome:
    """A recipient's status and the event that set it (None fields when never seen)."""

    email: str
    status: str | None  # delivered | bounce | dropped | deferred | processed | None
    event_type: str | None = None
    bounce_class: str | None = None
    reason: str | None = None
    smtp_status: str | None = None
    event_ts: datetime | None = None
    provider: str | None = None

    @property
    def settled(self) -> bool:
        return self.status in SETTLED


@dataclass
class WatchResult:
    """What is known about a send at the end of a watch (settled or timed out)."""

    category: str
    since: datetime
    recipients: int
    outcomes: dict[str, RecipientOutcome]  # caller's address -> outcome, in list order
    elapsed: float
    settled: bool
    timed_out: bool
    timeout: float
    polls: int = 0
    transient_errors: int = 0
    duplicates_in_list: int = 0
    #: what notifying did (pipelines.slack.NotifyReport), None when not notified
    notification: Any = None
    #: False while the warehouse has no ``events`` table (nothing loaded yet)
    warehouse_ready: bool = True
    #: while no recipient has an event in ``category``: the categories these recipients
    #: do have events in since the send (category -> recipients) ...
    other_categories: dict[str, int] = field(default_factory=dict)
    #: ... and how many have events without any category
    uncategorized: int = 0
    #: one sentence saying what the above means and what to check (None when all is well)
    hint: str | None = None
    #: the send's id in the send log (given, derived from category + time, or resumed)
    send_id: str | None = None
    #: True once the list is in the send log (recorded now or resumed from it)
    send_recorded: bool = False
    #: resumed from the log: recipients (``outcomes`` keys, ``email``) are hashes
    by_hash: bool = False

    # -- views -------------------------------------------------------------------------
    def _with(self, status) -> list[RecipientOutcome]:
        return [o for o in self.outcomes.values() if o.status == status]

    @property
    def bounced(self) -> list[RecipientOutcome]:
        return self._with("bounce")

    @property
    def dropped(self) -> list[RecipientOutcome]:
        return self._with("dropped")

    @property
    def failed(self) -> list[RecipientOutcome]:
        """Bounced and dropped recipients (the CSV posted to Slack)."""
        return [o for o in self.outcomes.values() if o.status in ("bounce", "dropped")]

    @property
    def delivered(self) -> list[str]:
        return [o.email for o in self._with("delivered")]

    @property
    def deferred(self) -> list[str]:
        """Recipients whose latest status is deferred (not settled)."""
        return [o.email for o in self._with("deferred")]

    @property
    def pending(self) -> list[str]:
        """Recipients the provider accepted (``processed``) with no outcome yet."""
        return [o.email for o in self._with("processed")]

    @property
    def never_seen(self) -> list[str]:
        """Recipients with no event at all in this category since the send."""
        return [o.email for o in self._with(None)]

    @property
    def never_reported(self) -> list[str]:
        """Sent, never reported by the provider: at the timeout, recipients with no event
        at all in this category since the send (empty while still waiting: they are then
        :attr:`not_yet_reported`)."""
        return self.never_seen if self.timed_out else []

    @property
    def not_yet_reported(self) -> list[str]:
        """While waiting (no timeout yet): recipients with no event so far."""
        return [] if self.timed_out else self.never_seen

    @property
    def unsettled(self) -> list[str]:
        return [o.email for o in self.outcomes.values() if not o.settled]

    @property
    def statuses(self) -> dict[str, str | None]:
        return {e: o.status for e, o in self.outcomes.items()}

    @property
    def counts(self) -> dict[str, int]:
        """``delivered``, ``bounce``, ``dropped`` (settled there), ``deferred`` (latest
        status deferred), ``unsettled`` (deferred, processed only, or never seen)."""
        c = Counter(o.status for o in self.outcomes.values())
        return {
            "delivered": c["delivered"],
            "bounce": c["bounce"],
            "dropped": c["dropped"],
            "deferred": c["deferred"],
            "unsettled": sum(n for s, n in c.items() if s not in SETTLED),
        }

    @property
    def bounce_classes(self) -> dict[str, int]:
        """Bounced recipients per class: hard, soft, block, undetermined."""
        c = Counter(o.bounce_class or "undetermined" for o in self.bounced)
        return {k: c[k] for k in ("hard", "soft", "block", "undetermined")}

    def rate(self, key: str) -> float | None:
        """``counts[key]`` divided by recipients (None for an empty list)."""
        return self.counts[key] / self.recipients if self.recipients else None

    def top_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        """The most common reasons of bounced and dropped recipients, addresses masked so
        the same reason groups together (``550 5.1.1 <x@y>: unknown`` -> ``<address>``)."""
        c = Counter(mask_addresses(o.reason or "(no reason given)") for o in self.failed)
        return c.most_common(n)

    @property
    def state(self) -> str:
        return "settled" if self.settled else ("timed out" if self.timed_out else "unsettled")

    def summary(self) -> str:
        """A few lines of plain text (the console summary and the CLI output)."""
        c, n = self.counts, self.recipients

        def pct(k):
            r = self.rate(k)
            return "" if r is None else f" ({r:.1%})"

        bc = self.bounce_classes
        lines = [
            f"mailpulse watch: category {self.category!r} since {_iso(self.since)}: "
            f"{self.state} after {format_duration(self.elapsed)}"
            + (f" (timeout {format_duration(self.timeout)})" if self.timed_out else ""),
            f"  recipients  {n}",
            f"  delivered   {c['delivered']}{pct('delivered')}",
            f"  bounced     {c['bounce']}{pct('bounce')}  hard {bc['hard']} / soft {bc['soft']}"
            f" / block {bc['block']} / undetermined {bc['undetermined']}",
            f"  dropped     {c['dropped']}{pct('dropped')}",
            f"  deferred    {c['deferred']}{pct('deferred')}",
            f"  unsettled   {c['unsettled']}{pct('unsettled')}  (never seen "
            f"{len(self.never_seen)}, accepted only {len(self.pending)})",
        ]
        if self.timed_out and self.never_reported:
            lines.append(
                f"  never reported {len(self.never_reported)}{_pct_of(self, len(self.never_reported))}"
                "  (sent, never reported by the provider: no event at all by the "
                "timeout)"
            )
        if self.send_id:
            lines.append(
                f"  send id     {self.send_id}"
                + ("" if self.send_recorded else "  (not in the send log)")
                + f"  (resume: mailpulse watch --send-id {self.send_id})"
            )
        reasons = self.top_reasons()
        if reasons:
            lines.append("  top reasons:")
            lines += [f"    {k:>4}  {r}" for r, k in reasons]
        if self.hint:
            lines.append(f"  note: {self.hint}")
        if self.timed_out:
            lines.append(
                "  timed out: the counts above are what was known at the timeout; "
                "rerun the watch later to see where the unsettled recipients ended"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``mailpulse watch --json``)."""

        def outcome(o: RecipientOutcome) -> dict[str, Any]:
            d = asdict(o)
            d["event_ts"] = _iso(o.event_ts) if o.event_ts else None
            return d

        return {
            "category": self.category,
            "since": _iso(self.since),
            "recipients": self.recipients,
            "counts": self.counts,
            "bounce_classes": self.bounce_classes,
            "rates": {k: self.rate(k) for k in COUNT_KEYS},
            "state": self.state,
            "settled": self.settled,
            "timed_out": self.timed_out,
            "elapsed_seconds": round(self.elapsed, 3),
            "timeout_seconds": self.timeout,
            "polls": self.polls,
            "transient_errors": self.transient_errors,
            "duplicates_in_list": self.duplicates_in_list,
            "top_reasons": [{"reason": r, "recipients": k} for r, k in self.top_reasons()],
            "bounced": [outcome(o) for o in self.bounced],
            "dropped": [outcome(o) for o in self.dropped],
            "deferred": self.deferred,
            "pending": self.pending,
            "never_seen": self.never_seen,
            "warehouse_ready": self.warehouse_ready,
            "hint": self.hint,
            "other_categories": dict(self.other_categories),
            "uncategorized": self.uncategorized,
            "send_id": self.send_id,
            "send_recorded": self.send_recorded,
            "by_hash": self.by_hash,
            "never_reported": len(self.never_reported),
            "not_yet_reported": len(self.not_yet_reported),
        }

    to_json = as_dict


def _pct_of(result: WatchResult, k: int) -> str:
    return f" ({k / result.recipients:.1%})" if result.recipients else ""


class WatchTimeout(TimeoutError):
    """Raised with ``raise_on_timeout=True``; ``.result`` holds what was known."""

    def __init__(self, result: WatchResult):
        self.result = result
        c = result.counts
        super().__init__(
            f"category {result.category!r}: {c['unsettled']} of {result.recipients} recipients "
            f"not settled after {format_duration(result.elapsed)} (timeout "
            f"{format_duration(result.timeout)}); counts so far {c}. Pass a longer timeout, "
            "or check that the load job is running if nothing was seen."
        )

    @property
    def counts(self) -> dict[str, int]:
        return self.result.counts


class WatchFailed(WarehouseError):
    """The warehouse kept failing beyond the retry policy; ``.result`` holds what the
    last successful poll knew (None when no poll succeeded)."""

    def __init__(self, message: str, result: WatchResult | None):
        super().__init__(message)
        self.result = result
