"""The run's configuration: read once at the entry point, then passed down as a value.

A :class:`Settings` is built once per command from the parsed flags and the environment
(:meth:`Settings.from_args`) or once per DAG task from the run's resolved params
(:meth:`Settings.from_params`; dags/mailpulse_common.py resolves the params from the run's
conf, Airflow Variables and Connections). Below the entry point nothing reads a flag or an
environment variable: the load job gets the normalizer settings
(:attr:`Settings.normalize`, a picklable
:class:`~pipelines.normalizers.base.NormalizeSettings` holding the hasher) and the rest of
its arguments from :meth:`Settings.load_kwargs`.

Precedence, for every setting: a flag (or a param) wins over the environment, which wins
over the default. A setting that cannot work is a :class:`~pipelines.errors.UsageError`
naming the flag, param or variable to fix.

==================  ===========================  ====================  ========================
setting             flag                         DAG param             environment / default
==================  ===========================  ====================  ========================
warehouse           ``--warehouse``              ``warehouse``         DAG: ``MAILPULSE_WAREHOUSE``;
                                                                       DuckDB under
                                                                       ``$MAILPULSE_DATA_DIR``
sources             ``--archive``, ``--source``  ``archive``,          DAG: ``MAILPULSE_ARCHIVE``;
                                                 ``source_specs``      ``MAILPULSE_SOURCES``; the
                                                                       default archive
hash key                                                               ``MAILPULSE_HASH_KEY``
                                                                       (development key on DuckDB)
SES category tag    ``--ses-category-tag``       ``ses_category_tag``  ``category``
CMC time zone       ``--cmc-timezone``           ``cmc_timezone``      ``Asia/Tokyo``
CMC category field  ``--cmc-category-field``     ``cmc_category_field`` none
record size limit   ``--max-record-bytes``       ``max_record_bytes``  10485760
runner, staging     ``--runner``, ``--staging``  ``runner``,           ``DirectRunner``; beside
                                                 ``staging``           the warehouse
Beam options        (unknown flags)              ``beam_args``         none
days, window        ``--days``,                  ``days``,             4, 4
                    ``--window-days``            ``window_days``
==================  ===========================  ====================  ========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UsageError
from .hashing import EmailHasher, MissingHashKey, resolve_key
from .normalizers.base import NormalizeSettings
from .records import DEFAULT_MAX_RECORD_BYTES
from .sources import SOURCES_ENV, Source, SourceError, archive_sources, resolve_sources

#: ``load`` without ``--date`` reads the new files of this many archive days, ending today.
DEFAULT_DAYS = 4
#: The DAGs' environment: the warehouse and archive when no param or Variable names them.
WAREHOUSE_ENV = "MAILPULSE_WAREHOUSE"
ARCHIVE_ENV = "MAILPULSE_ARCHIVE"
#: The Airflow Variable that holds the hash key when the environment does not.
HASH_KEY_VARIABLE = "mailpulse_hash_secret"

#: The params :meth:`Settings.from_params` reads (anything else in the mapping is ignored).
PARAMS = (
    "warehouse",
    "archive",
    "source_specs",
    "runner",
    "staging",
    "beam_args",
    "days",
    "window_days",
    "chunk_lines",
    "ses_category_tag",
    "cmc_timezone",
    "cmc_category_field",
    "max_record_bytes",
)


def hasher_from(environ: Mapping[str, str], *, embedded: bool, hint: str = "") -> EmailHasher:
    """The email hasher keyed by ``MAILPULSE_HASH_KEY``; the development key only on the
    embedded default. A missing key is a UsageError saying how to set it."""
    try:
        return EmailHasher(resolve_key(environ, embedded=embedded))
    except MissingHashKey as exc:
        raise UsageError(f"{exc}{hint}") from None


def check_normalize_values(
    cmc_timezone: str, max_record_bytes: int, names: Mapping[str, str] | None = None
) -> None:
    """UsageError for an unknown CMC time zone or a record limit below one byte, naming the
    setting as the user spells it (``names``: setting -> e.g. ``--cmc-timezone``)."""
    from zoneinfo import ZoneInfo

    names = names or {}
    if max_record_bytes < 1:
        raise UsageError(
            f"{names.get('max_record_bytes', 'max_record_bytes')} {max_record_bytes!r} is not "
            f"a positive number of bytes (e.g. {DEFAULT_MAX_RECORD_BYTES})"
        )
    try:
        ZoneInfo(cmc_timezone)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise UsageError(
            f"{names.get('cmc_timezone', 'cmc_timezone')} {cmc_timezone!r} is not a known "
            f"time zone (use an IANA name such as Asia/Tokyo): {exc}"
        ) from None


def normalize_settings(
    hasher: EmailHasher | None,
    *,
    ses_category_tag: str | None = None,
    cmc_timezone: str | None = None,
    cmc_category_field: str | None = None,
    max_record_bytes: int | None = None,
    names: Mapping[str, str] | None = None,
) -> NormalizeSettings | None:
    """NormalizeSettings with the defaults filled in for empty values, after
    :func:`check_normalize_values`; ``None`` (values checked) when there is no hasher."""
    zone = cmc_timezone or "Asia/Tokyo"
    limit = DEFAULT_MAX_RECORD_BYTES if max_record_bytes is None else max_record_bytes
    check_normalize_values(zone, limit, names)
    if hasher is None:
        return None
    return NormalizeSettings(
        hasher=hasher,
        ses_category_tag=ses_category_tag or "category",
        cmc_timezone=zone,
        cmc_category_field=cmc_category_field or None,
        max_record_bytes=limit,
    )


@dataclass(frozen=True)
class Settings:
    """One run's configuration (see the module docstring for where each value comes from)."""

    #: ``duckdb:///path/file.duckdb`` or ``bigquery://PROJECT/DATASET``.
    warehouse: str
    #: What the load reads (resolved from the archive, the source specs or the default).
    sources: tuple[Source, ...] = ()
    #: The archive root as given (``None``: not given).
    archive: str | None = None
    #: The embedded default archive (``$MAILPULSE_DATA_DIR/archive``).
    default_archive: str = ""
    #: The sources were named (``--source`` or ``$MAILPULSE_SOURCES``), so the default
    #: archive is not read (and ``mailpulse run`` does not fill it with a sample day).
    explicit_sources: bool = False
    #: The email hasher (``None`` for commands that hash nothing, e.g. ``outcomes``).
    hasher: EmailHasher | None = None
    #: What the normalizers need (``None`` for commands that read no records).
    normalize: NormalizeSettings | None = None
    runner: str = "DirectRunner"
    staging: str | None = None
    #: Pipeline options passed on to Beam (the flags mailpulse does not know).
    beam_args: tuple[str, ...] = ()
    #: Archive days a load without a date scans, ending today.
    days: int = DEFAULT_DAYS
    #: Records per pipeline element (``None``: the load job's default).
    chunk_lines: int | None = None
    #: Outcome partitions recomputed, ending at the last day (``None``: the package
    #: default, ``pipelines.outcomes.WINDOW_DAYS``).
    window_days: int | None = None

    @property
    def embedded(self) -> bool:
        """The warehouse is the embedded DuckDB kind (the development key is allowed)."""
        return self.warehouse.startswith("duckdb:")

    # -- building ---------------------------------------------------------------------
    @classmethod
    def from_args(
        cls, args, environ: Mapping[str, str] | None = None, *, hash_key: bool | None = None
    ) -> Settings:
        """From a command's parsed flags (an ``argparse.Namespace``; flags the command does
        not define are left at their defaults) and the environment.

        The hash key is read when ``hash_key`` is true, or (``None``) when the command reads
        records (it defines ``--ses-category-tag``); the normalizer settings are built for
        such commands. Raises UsageError naming the flag or variable to fix."""
        from .config import default_archive as _default_archive
        from .config import default_warehouse_uri

        environ = os.environ if environ is None else environ
        warehouse = getattr(args, "warehouse", None) or default_warehouse_uri(environ)
        default_archive = _default_archive(environ)
        archive = getattr(args, "archive", None)
        specs = list(getattr(args, "source", None) or [])
        sources: tuple[Source, ...] = ()
        if hasattr(args, "source"):
            try:
                sources = tuple(
                    resolve_sources(
                        archive, specs, default_archive=default_archive, environ=environ
                    )
                )
            except SourceError as exc:
                raise UsageError(str(exc)) from None
        reads_records = hasattr(args, "ses_category_tag")
        hasher = None
        if hash_key or (hash_key is None and reads_records):
            hasher = hasher_from(environ, embedded=warehouse.startswith("duckdb:"))
        normalize = None
        if reads_records:
            normalize = normalize_settings(
                hasher,
                ses_category_tag=args.ses_category_tag,
                cmc_timezone=getattr(args, "cmc_timezone", None),
                cmc_category_field=getattr(args, "cmc_category_field", None),
                max_record_bytes=getattr(args, "max_record_bytes", None),
                names={"cmc_timezone": "--cmc-timezone", "max_record_bytes": "--max-record-bytes"},
            )
        chunk_lines = getattr(args, "chunk_lines", None)
        if chunk_lines is not None and chunk_lines < 1:
            raise UsageError("--chunk-lines must be a positive number")
        days = getattr(args, "days", None)
        days = DEFAULT_DAYS if days is None else days
        if days < 1:
            raise UsageError("--days must be at least 1")
        window_days = getattr(args, "window_days", None)
        if window_days is not None and window_days < 1:
            raise UsageError(f"--window-days must be at least 1, got {window_days}")
        return cls._where(
            environ,
            (warehouse, archive, default_archive, specs, sources),
            hasher=hasher,
            normalize=normalize,
            runner=getattr(args, "runner", None) or "DirectRunner",
            staging=getattr(args, "staging", None),
            beam_args=tuple(getattr(args, "extra", None) or ()),
            days=days,
            chunk_lines=chunk_lines,
            window_days=window_days,
        )

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, hash_key=True
    ) -> Settings:
        """From a mapping of the names in :data:`PARAMS` (a DAG run's resolved params;
        missing or empty: the environment, then the default) and the environment.

        Values may be text (Airflow Variables are): numbers are converted, ``beam_args``
        and ``source_specs`` may be a list or a space-separated string. ``hash_key=False``
        checks everything but the key (the DAG's first task, which must not see it).
        Raises UsageError naming the param or variable to fix."""
        from .config import default_archive as _default_archive
        from .config import default_warehouse_uri

        environ = os.environ if environ is None else environ

        def given(name):
            value = params.get(name)
            return None if value in (None, "") else value

        def number(name):
            value = given(name)
            if value is None:
                return None
            try:
                n = int(value)
            except (TypeError, ValueError):
                n = None
            if n is None or isinstance(value, bool) or n < 1 or n != float(value):
                raise UsageError(f"param {name!r} must be a positive whole number, got {value!r}")
            return n

        def words(name) -> list[str]:
            value = given(name)
            if value is None:
                return []
            if isinstance(value, str):
                return value.split()
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value)
            raise UsageError(f"param {name!r} must be a list of strings, got {value!r}")

        warehouse = (
            given("warehouse") or environ.get(WAREHOUSE_ENV) or default_warehouse_uri(environ)
        )
        default_archive = _default_archive(environ)
        archive = given("archive") or environ.get(ARCHIVE_ENV) or None
        specs = words("source_specs")
        try:
            sources = tuple(
                resolve_sources(archive, specs, default_archive=default_archive, environ=environ)
            )
        except SourceError as exc:
            raise UsageError(f"{exc} (run param 'archive' or 'source_specs')") from None
        embedded = warehouse.startswith("duckdb:")
        hasher = None
        if hash_key:
            hasher = hasher_from(
                environ,
                embedded=embedded,
                hint=f" In Airflow, the Variable {HASH_KEY_VARIABLE!r} can hold it instead.",
            )
        normalize = normalize_settings(
            hasher,
            ses_category_tag=given("ses_category_tag"),
            cmc_timezone=given("cmc_timezone"),
            cmc_category_field=given("cmc_category_field"),
            max_record_bytes=number("max_record_bytes"),
            names={"cmc_timezone": "param 'cmc_timezone'"},
        )
        return cls._where(
            environ,
            (warehouse, archive, default_archive, specs, sources),
            hasher=hasher,
            normalize=normalize,
            runner=given("runner") or "DirectRunner",
            staging=given("staging"),
            beam_args=tuple(words("beam_args")),
            days=number("days") or DEFAULT_DAYS,
            chunk_lines=number("chunk_lines"),
            window_days=number("window_days"),
        )

    @classmethod
    def _where(cls, environ, where: tuple, **fields) -> Settings:
        """Both builders end here: (warehouse, archive, default archive, source specs,
        resolved sources), and whether the sources were named (flags, params or
        ``MAILPULSE_SOURCES``) rather than the default archive."""
        warehouse, archive, default_archive, specs, sources = where
        named = bool(specs) or (archive is None and bool(environ.get(SOURCES_ENV, "").strip()))
        return cls(
            warehouse=warehouse,
            sources=sources,
            archive=archive,
            default_archive=default_archive,
            explicit_sources=named,
            **fields,
        )

    # -- using ------------------------------------------------------------------------
    def load_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`pipelines.load.run_load` these settings give."""
        if self.normalize is None:
            raise ValueError("these settings have no normalizer settings (built without a key)")
        kwargs: dict[str, Any] = dict(
            config=self.normalize,
            sources=list(self.sources),
            days=self.days,
            runner=self.runner,
            staging=self.staging,
            beam_args=list(self.beam_args),
        )
        if self.chunk_lines is not None:
            kwargs["chunk_lines"] = self.chunk_lines
        return kwargs

    def check_local_sources(self) -> None:
        """UsageError when a local source's directory does not exist (before any Beam
        start-up), naming the flags that choose where to read."""
        from_archive: set[Source] = set()
        for root in {self.archive} | (set() if self.archive else {self.default_archive}):
            if root:
                from_archive |= set(archive_sources(root))
        for s in self.sources:
            if not s.is_local():
                continue
            where = s.root.rsplit("/", 1)[0] if s in from_archive else s.root
            if not os.path.isdir(where):
                raise UsageError(
                    f"archive {where} does not exist; pass --archive DIR or "
                    "--source PROVIDER=URI (or create sample data with "
                    "`mailpulse synth --out DIR`)"
                )

    def check_storage(self) -> None:
        """UsageError when a source's storage cannot be used (library, credentials)."""
        from .storage import StorageError, configure

        try:
            configure([s.root for s in self.sources], list(self.beam_args))
        except StorageError as exc:
            raise UsageError(str(exc)) from None

    def as_params(self) -> dict[str, Any]:
        """JSON-ready values (no secret) that :meth:`from_params` reads back."""
        n = self.normalize
        from_archive = set(archive_sources(self.archive)) if self.archive else set()
        return {
            "warehouse": self.warehouse,
            "archive": self.archive,
            "source_specs": [s.spec for s in self.sources if s not in from_archive]
            if self.archive or self.explicit_sources
            else [],
            "runner": self.runner,
            "staging": self.staging,
            "beam_args": list(self.beam_args),
            "days": self.days,
            "window_days": self.window_days,
            "chunk_lines": self.chunk_lines,
            "ses_category_tag": n.ses_category_tag if n else None,
            "cmc_timezone": n.cmc_timezone if n else None,
            "cmc_category_field": n.cmc_category_field if n else None,
            "max_record_bytes": n.max_record_bytes if n else None,
        }
