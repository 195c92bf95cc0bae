"""The entry point: :func:`generate`, and the guard against replacing an earlier archive."""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Sequence

from .config import SynthConfig
from .generator import _Generator
from .model import PROVIDERS
from .summary import SynthSummary

_FILE_RE = re.compile(r"^synth-(\d{8})-(\d{10})-(\d{4})\.json\.gz$")


def existing_files(
    out: str | os.PathLike, day: date, providers: Sequence[str] = PROVIDERS
) -> list[Path]:
    """Files an earlier ``synth`` run for ``day`` wrote under ``out`` (any seed)."""
    out = Path(out)
    prefix = f"synth-{day:%Y%m%d}-"
    found: list[Path] = []
    for p in providers:
        for k in range(0, 8):
            d = day + timedelta(days=k)
            base = out / p / f"{d:%Y}" / f"{d:%m}" / f"{d:%d}"
            if not base.is_dir():
                continue
            for hour_dir in sorted(base.iterdir()):
                if hour_dir.is_dir():
                    found.extend(
                        sorted(
                            f
                            for f in hour_dir.iterdir()
                            if f.name.startswith(prefix) and _FILE_RE.match(f.name)
                        )
                    )
    return found


class ArchiveExists(ValueError):
    """The output already holds a synth archive of that date."""


def generate(
    out: str | os.PathLike | None = None,
    date: date | str | None = None,
    *,
    config: SynthConfig | None = None,
    **options: Any,
) -> SynthSummary:
    """Write a synthetic archive and return its :class:`SynthSummary` (``.truth`` inside).

    ``generate("archive", "2026-11-23", messages=10_000, seed=7, corrupt_rate=0.01)``;
    options are :class:`SynthConfig` fields. Raises ValueError (with the fix) for bad
    options and :class:`ArchiveExists` when ``out`` already holds a synth archive of that
    date (pass ``overwrite=True`` to replace it; other files are never touched).
    """
    if config is None:
        if out is None or date is None:
            raise ValueError("generate() needs out and date (or config=SynthConfig(...))")
        config = SynthConfig(out=out, date=date, **options)
    cfg = config.validate()
    old = existing_files(cfg.out, cfg.date, cfg.providers)
    if old:
        if not cfg.overwrite:
            raise ArchiveExists(
                f"{cfg.out} already holds a synth archive for {cfg.date} ({len(old)} files); "
                f"use another --out directory or pass --overwrite to replace it"
            )
        for f in old:
            f.unlink()
    return _Generator(cfg).run()
