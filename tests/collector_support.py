"""Helpers shared by the collector tests."""

from __future__ import annotations

import gzip
from pathlib import Path


def archived(root: Path) -> list[bytes]:
    """Every archived line, from open (.json) and closed (.json.gz) files."""
    lines: list[bytes] = []
    for p in sorted(root.rglob("*.json*")):
        data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        lines.extend(ln for ln in data.split(b"\n") if ln)
    return lines
