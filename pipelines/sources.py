"""Where the raw provider events live, and which objects there are archive files.

A :class:`Source` is one provider's events under one URI, in one key layout:

- ``hourly`` (the default): ``URI/YYYY/MM/DD/HH/<name>`` with a JSON/NDJSON name
  (``.json``, ``.ndjson``, ``.jsonl``, each optionally ``.gz``): the collector's layout.
- ``firehose``: Kinesis Data Firehose's default S3 keys,
  ``URI/YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<id>`` with no extension or
  ``.gz`` (compression is told by the bytes when read, not by the name).

``--archive A`` is the mailpulse layout of all three providers, the same as
``--source sendgrid=A/sendgrid --source ses=A/ses --source cmc=A/cmc``. A source's provider
is fixed by its definition; nothing is guessed from folder names.

Listing (:func:`list_day`) is one ``FileSystems.match`` per source and day (on S3/GCS a
single prefix listing). Objects the layout does not accept are counted with the reason
(``extension``, ``key pattern``, ``not published yet``, ``empty``, ``symlink outside the
archive``), so a load that finds nothing can say why.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Mapping, NamedTuple
from urllib.parse import parse_qsl

log = logging.getLogger(__name__)

PROVIDERS = ("sendgrid", "ses", "cmc")
LAYOUTS = ("hourly", "firehose")
SOURCES_ENV = "MAILPULSE_SOURCES"

#: Names the hourly layout reads.
ARCHIVE_SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
#: Names writers use for files that are not complete yet (the collector and drain-sqs
#: write under such names and publish by an atomic rename); never read.
UNPUBLISHED_SUFFIXES = (".part", ".open", ".tmp", ".partial")
#: Firehose's default object name: <stream>-<version>-YYYY-MM-DD-HH-MM-SS-<id>[.gz]
FIREHOSE_NAME = re.compile(
    r"^(?P<stream>.+)-(?P<version>\d+)-(?P<ts>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-"
    r"(?P<id>[0-9A-Za-z][0-9A-Za-z-]*)(?P<ext>(?:\.[A-Za-z0-9]+){0,2})$"
)


class SourceError(ValueError):
    """A source definition that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class Source:
    provider: str
    root: str
    layout: str = "hourly"

    def __post_init__(self):
        if self.provider not in PROVIDERS:
            raise SourceError(
                f"unknown provider {self.provider!r} in a source; use one of "
                f"{', '.join(PROVIDERS)} (PROVIDER=URI)"
            )
        if self.layout not in LAYOUTS:
            raise SourceError(
                f"unknown layout {self.layout!r}; use ?layout=hourly or ?layout=firehose"
            )

    @property
    def spec(self) -> str:
        q = "" if self.layout == "hourly" else f"?layout={self.layout}"
        return f"{self.provider}={self.root}{q}"

    def day_glob(self, day: date) -> str:
        return f"{self.root}/{day:%Y/%m/%d}/*/*"

    def is_local(self) -> bool:
        return "://" not in self.root


def _clean_root(uri: str) -> str:
    uri = uri.strip()
    if "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri)).rstrip("/") or "/"
    return uri.rstrip("/")


def parse_source(spec: str) -> Source:
    """``PROVIDER=URI[?layout=hourly|firehose]`` -> Source."""
    provider, sep, rest = spec.partition("=")
    if not sep or not rest.strip():
        raise SourceError(
            f"--source {spec!r}: use PROVIDER=URI[?layout=hourly|firehose], "
            "e.g. ses=s3://bucket/firehose-prefix?layout=firehose"
        )
    uri, _, query = rest.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(opts) - {"layout"}
    if unknown:
        raise SourceError(
            f"--source {spec!r}: unknown option {sorted(unknown)[0]!r}; "
            "the only option is ?layout=hourly|firehose"
        )
    return Source(provider.strip().lower(), _clean_root(uri), opts.get("layout", "hourly"))


def archive_sources(archive: str) -> list[Source]:
    """The mailpulse layout: one hourly source per provider folder."""
    root = _clean_root(archive)
    return [Source(p, f"{root}/{p}") for p in PROVIDERS]


def resolve_sources(
    archive: str | None,
    specs: Iterable[str] = (),
    *,
    default_archive: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Source]:
    """The sources a command reads: ``--archive`` (or the default archive when no source
    is given at all) plus each ``--source``; ``MAILPULSE_SOURCES`` when neither is given."""
    environ = os.environ if environ is None else environ
    specs = list(specs)
    if not specs and archive is None and environ.get(SOURCES_ENV, "").strip():
        specs = environ[SOURCES_ENV].split()
    out: list[Source] = []
    if archive is not None:
        out += archive_sources(archive)
    elif not specs and default_archive is not None:
        out += archive_sources(default_archive)
    out += [parse_source(s) for s in specs]
    seen, unique = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    if not unique:
        raise SourceError("nothing to read: pass --archive URI or --source PROVIDER=URI")
    return unique


class ArchiveFile(NamedTuple):
    """One object to read: where, whose, which archive day, and its identity."""

    uri: str
    provider: str
    day: date
    size: int
    generation: str  # last-modified time (seconds) as text; a change means "read again"


@dataclass
class Listing:
    """What listing found: accepted files and the objects skipped, by reason."""

    files: list[ArchiveFile] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    looked_in: list[str] = field(default_factory=list)
    objects_seen: int = 0

    def skip(self, reason: str, path: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, path)

    def extend(self, other: "Listing") -> None:
        self.files += other.files
        for k, v in other.skipped.items():
            self.skipped[k] = self.skipped.get(k, 0) + v
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)
        self.looked_in += other.looked_in
        self.objects_seen += other.objects_seen


def accept(source: Source, name: str) -> str | None:
    """None when ``name`` (an object's base name) is an archive file of this layout,
    else the reason it is skipped."""
    if name.startswith(".") or name.endswith(UNPUBLISHED_SUFFIXES):
        return "not published yet"
    if source.layout == "firehose":
        return None if FIREHOSE_NAME.match(name) else "key pattern"
    return None if name.endswith(ARCHIVE_SUFFIXES) else "extension"


def _inside(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def list_day(source: Source, day: date) -> Listing:
    """The archive files of ``source`` for one day (one listing call)."""
    from apache_beam.io.filesystems import FileSystems

    out = Listing()
    pattern = source.day_glob(day)
    out.looked_in.append(pattern)
    metas = FileSystems.match([pattern])[0].metadata_list
    root_real = os.path.realpath(source.root) if source.is_local() else ""
    for m in metas:
        out.objects_seen += 1
        name = m.path.rstrip("/").rsplit("/", 1)[-1]
        reason = accept(source, name)
        if reason is None and m.size_in_bytes <= 0:
            reason = "empty"
        if reason is None and source.is_local() and not _inside(m.path, root_real):
            reason = "symlink outside the archive"
            log.warning(
                "skipping %s: it is a symlink that leads outside the archive %s",
                m.path,
                source.root,
            )
        if reason is None and source.is_local() and os.path.isdir(m.path):
            reason = "directory"
        if reason:
            out.skip(reason, m.path)
            continue
        gen = m.last_updated_in_seconds
        out.files.append(
            ArchiveFile(
                m.path, source.provider, day, int(m.size_in_bytes), f"{gen:.6f}" if gen else ""
            )
        )
    out.files.sort()
    return out


def list_days(sources: Iterable[Source], days: Iterable[date]) -> Listing:
    out = Listing()
    days = list(days)
    for s in sources:
        for d in days:
            out.extend(list_day(s, d))
    out.files.sort()
    return out


def explain_empty(listing: Listing, sources: list[Source], days: list[date]) -> str:
    """Why a load found nothing: where it looked and what it skipped."""
    span = (f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]}") if days else "?"
    parts = [f"no archive files for {span}."]
    parts.append(
        "Looked in: "
        + "; ".join(
            (
                f"{s.root}/{days[0]:%Y/%m/%d}/*/*"
                if len(days) == 1
                else f"{s.root}/YYYY/MM/DD/*/* ({s.layout})"
            )
            for s in sources
        )
        + "."
    )
    if listing.objects_seen:
        why = ", ".join(
            f"{n} by {reason} (e.g. {listing.examples[reason]})"
            for reason, n in sorted(listing.skipped.items())
        )
        parts.append(f"{listing.objects_seen} objects there were skipped: {why}.")
        if listing.skipped.get("key pattern"):
            parts.append("Firehose objects are named <stream>-<n>-YYYY-MM-DD-HH-MM-SS-<id>[.gz].")
        if listing.skipped.get("extension"):
            parts.append(
                "The hourly layout reads "
                + ", ".join(ARCHIVE_SUFFIXES)
                + "; for Kinesis Firehose objects use "
                "--source PROVIDER=URI?layout=firehose."
            )
    else:
        parts.append(
            "No objects at all there: check the prefix, the date (--date / --days) "
            "and that the layout is <root>/YYYY/MM/DD/HH/<file>."
        )
    foreign = _foreign_provider_folders(sources, days)
    if foreign:
        parts.append(
            "Objects in folders that are not provider folders: "
            + ", ".join(f"{n} in {folder!r}" for folder, n in sorted(foreign.items()))
            + " (the archive layout is <archive>/{sendgrid,ses,cmc}/YYYY/MM/DD/HH/; "
            "use --source PROVIDER=URI for another folder)."
        )
    parts.append("Pass --allow-empty if an empty window is expected.")
    return " ".join(parts)


def _foreign_provider_folders(sources: list[Source], days: list[date]) -> dict[str, int]:
    """For archive-layout sources: objects of these days under folders that are not a
    provider's (``<archive>/<folder>/YYYY/MM/DD/*/*``). Only computed for the error path."""
    from apache_beam.io.filesystems import FileSystems

    archives = {
        s.root.rsplit("/", 1)[0]
        for s in sources
        if s.layout == "hourly" and s.root.rsplit("/", 1)[-1] == s.provider
    }
    found: dict[str, int] = {}
    for archive in sorted(archives):
        for d in days[-3:]:
            try:
                metas = FileSystems.match([f"{archive}/*/{d:%Y/%m/%d}/*/*"])[0].metadata_list
            except Exception as exc:  # noqa: BLE001 - only a diagnostic
                log.debug("diagnostic listing failed: %s", exc)
                continue
            for m in metas:
                folder = m.path[len(archive) + 1 :].split("/", 1)[0]
                if folder not in PROVIDERS:
                    found[folder] = found.get(folder, 0) + 1
    return found
