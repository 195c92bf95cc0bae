"""What ``mailpulse synth`` generates: :class:`SynthConfig`, its validation and defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Sequence

from .model import CATEGORY_PROFILES, PROVIDERS, CategoryProfile


@dataclass
class SynthConfig:
    """What to generate. Rates are probabilities in [0, 1]; see :func:`generate`."""

    out: str | os.PathLike
    date: date
    messages: int = 1000
    seed: int = 0
    providers: Sequence[str] = PROVIDERS
    categories: int = 5
    #: base P(bounce) per recipient, scaled per category and recipient domain
    bounce_rate: float = 0.04
    #: base P(dropped) per recipient (suppressed or invalid address), scaled per category
    drop_rate: float = 0.01
    #: base P(deferred at least once), scaled per recipient domain
    defer_rate: float = 0.05
    #: P(an extra corrupt record after a record): truncated JSON, not JSON, no recipient
    corrupt_rate: float = 0.0
    #: P(a SendGrid post is posted again / Firehose writes an SES record twice)
    retry_rate: float = 0.02
    #: P(an event of date D arrives late, in D+1's hour directories)
    late_rate: float = 0.01
    #: P(an SES record arrives inside an SNS envelope instead of bare)
    sns_rate: float = 0.1
    #: at most this many events per archive file (an hour can have several files)
    events_per_file: int = 10_000
    compresslevel: int = 1
    #: replace an earlier synth archive of the same date in ``out``
    overwrite: bool = False
    #: buffered future events above this many bytes spill to temporary files
    spill_bytes: int = 32 << 20

    def validate(self) -> "SynthConfig":
        """Normalise and check; ValueError with a message that names the fix."""
        if isinstance(self.date, str):
            try:
                self.date = date.fromisoformat(self.date)
            except ValueError:
                raise ValueError(f"date {self.date!r} is not a date; use YYYY-MM-DD") from None
        if isinstance(self.date, datetime):
            self.date = self.date.date()
        if not isinstance(self.date, date):
            raise ValueError("date must be a datetime.date or YYYY-MM-DD")
        if not isinstance(self.messages, int) or self.messages < 1:
            raise ValueError(f"messages must be a whole number >= 1 (got {self.messages!r})")
        if self.messages > 50_000_000:
            raise ValueError("messages must be at most 50,000,000; generate several dates instead")
        if isinstance(self.providers, str):
            self.providers = [p for p in self.providers.split(",") if p.strip()]
        chosen = [p.strip().lower() for p in self.providers]
        unknown = [p for p in chosen if p not in PROVIDERS]
        if unknown or not chosen:
            raise ValueError(
                f"unknown provider(s) {', '.join(unknown) or '(none)'}; "
                f"use a comma-separated subset of {','.join(PROVIDERS)}"
            )
        self.providers = tuple(p for p in PROVIDERS if p in chosen)
        if not isinstance(self.categories, int) or not 1 <= self.categories <= 99:
            raise ValueError(f"categories must be between 1 and 99 (got {self.categories!r})")
        for name in (
            "bounce_rate",
            "drop_rate",
            "defer_rate",
            "corrupt_rate",
            "retry_rate",
            "late_rate",
            "sns_rate",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} must be between 0 and 1 (got {v!r}); e.g. {flag} 0.05")
        if self.bounce_rate + self.drop_rate > 0.9:
            raise ValueError(
                "bounce_rate + drop_rate must stay below 0.9 so some mail is "
                "delivered; lower --bounce-rate or --drop-rate"
            )
        if not isinstance(self.events_per_file, int) or self.events_per_file < 1:
            raise ValueError("events_per_file must be >= 1")
        if not isinstance(self.compresslevel, int) or not 0 <= self.compresslevel <= 9:
            raise ValueError("compresslevel must be between 0 and 9")
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out} exists and is not a directory; choose another --out")
        return self

    def category_profiles(self) -> tuple[CategoryProfile, ...]:
        base = list(CATEGORY_PROFILES[: self.categories])
        for k in range(len(base), self.categories):
            base.append(
                CategoryProfile(
                    f"category{k + 1:02d}", 3, 1.0, 1.0, 0.2, 0.1, 0.002, 0.02, f"お知らせ {k + 1}"
                )
            )
        return tuple(base)

    def params(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "messages": self.messages,
            "seed": self.seed,
            "providers": list(self.providers),
            "categories": self.categories,
            "bounce_rate": self.bounce_rate,
            "drop_rate": self.drop_rate,
            "defer_rate": self.defer_rate,
            "corrupt_rate": self.corrupt_rate,
            "retry_rate": self.retry_rate,
            "late_rate": self.late_rate,
            "sns_rate": self.sns_rate,
            "events_per_file": self.events_per_file,
        }
