"""What one ``generate`` run wrote: :class:`SynthSummary` (files, records, events, timing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from .truth import GroundTruth


@dataclass
class SynthSummary:
    out: Path
    date: date
    seed: int
    messages: int = 0
    recipients: int = 0
    files: int = 0
    bytes_written: int = 0
    files_by_provider: dict[str, int] = field(default_factory=dict)
    #: lines written (webhook posts / records / bodies), duplicates and corrupt included
    records_by_provider: dict[str, int] = field(default_factory=dict)
    #: canonical events of the model (unique), per provider and per provider + type
    events_by_provider: dict[str, int] = field(default_factory=dict)
    events_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    #: events in the files, retried / duplicated copies included (corrupt records not)
    events_written: int = 0
    corrupt_records: int = 0
    corrupt_by_provider: dict[str, int] = field(default_factory=dict)
    retried_posts: int = 0  # SendGrid posts written again
    duplicated_records: int = 0  # SES records written twice
    duplicate_events: int = 0  # events inside retried posts / duplicated records
    late_events: int = 0  # events of date D sent to D+1's hour directories on purpose
    elapsed_s: float = 0.0
    truth: GroundTruth | None = None

    @property
    def events(self) -> int:
        return sum(self.events_by_provider.values())

    @property
    def events_per_s(self) -> float:
        return self.events_written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "date": self.date.isoformat(),
            "seed": self.seed,
            "messages": self.messages,
            "recipients": self.recipients,
            "files": self.files,
            "bytes_written": self.bytes_written,
            "files_by_provider": self.files_by_provider,
            "records_by_provider": self.records_by_provider,
            "events": self.events,
            "events_by_provider": self.events_by_provider,
            "events_by_type": self.events_by_type,
            "events_written": self.events_written,
            "corrupt_records": self.corrupt_records,
            "corrupt_by_provider": self.corrupt_by_provider,
            "retried_posts": self.retried_posts,
            "duplicated_records": self.duplicated_records,
            "duplicate_events": self.duplicate_events,
            "late_events": self.late_events,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s),
        }
