"""Object storage for every command that takes a URI: local paths, ``gs://`` and ``s3://``.

All reading and writing goes through Beam's ``FileSystems``, so the same code runs here
and on Dataflow workers. Two things must happen before the first listing, or Beam fails
in ways that do not name the fix (PLATFORM-NOTES, "Object storage"):

- ``FileSystems.set_options(options)``: Beam's S3 filesystem builds its boto3 client from
  the options it was given and refuses to list without them, whatever ``AWS_*`` says.
  With no ``--s3_*`` flag the options are empty and boto3 uses its standard chain
  (``AWS_*`` variables including ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, instance roles).
- a check that the library and the credentials for each scheme are there, so a missing
  ``boto3`` or credential fails at start with the fix, not mid-load.

``STORAGE_EMULATOR_HOST`` (a local GCS emulator) needs no credentials: Beam would
otherwise spend about 26 s retrying Application Default Credentials before it connects
anonymously, so with the emulator set and no ``GOOGLE_APPLICATION_CREDENTIALS`` the
anonymous client is chosen at once.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("gs://", "s3://")


class StorageError(RuntimeError):
    """Storage that cannot be used as configured; the message names the fix."""


def scheme_of(uri: str) -> str:
    """``gs``, ``s3`` or ``file``."""
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def pipeline_options(beam_args: Iterable[str] = ()):
    """Beam ``PipelineOptions`` from extra command-line flags (``--s3_*``, ``--project`` ...)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(list(beam_args))


def configure(
    uris: Iterable[str],
    beam_args: Iterable[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    check: bool = True,
):
    """Give Beam's FileSystems their options and check each URI's scheme can be used.

    Call once per process, before anything is listed, opened or written. Returns the
    ``PipelineOptions`` built from ``beam_args`` (pass the same to the pipeline).
    """
    from apache_beam.io.filesystems import FileSystems

    environ = os.environ if environ is None else environ
    options = pipeline_options(beam_args)
    schemes = {scheme_of(u) for u in uris if u}
    if "gs" in schemes:
        _prefer_anonymous_for_emulator(environ)
    if check:
        for scheme in sorted(schemes):
            if scheme == "s3":
                check_s3(options, environ)
            elif scheme == "gs":
                check_gcs(environ)
            elif scheme != "file":
                raise StorageError(
                    f"unsupported storage scheme {scheme}://; use a local path, "
                    "gs://BUCKET/prefix or s3://BUCKET/prefix"
                )
    FileSystems.set_options(options)
    return options


def check_s3(options, environ: Mapping[str, str]) -> None:
    """boto3 is importable and some credential source is configured."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise StorageError(
            "s3:// needs boto3, which comes with Beam's AWS extra: "
            "pip install 'apache-beam[aws]==2.77.0' (or reinstall mailpulse: "
            "pip install -e .)"
        ) from None
    from apache_beam.options.pipeline_options import S3Options

    s3 = options.view_as(S3Options)
    if s3.s3_access_key_id and s3.s3_secret_access_key:
        return
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        creds = boto3.session.Session().get_credentials()
    except BotoCoreError as exc:
        raise StorageError(
            f"AWS configuration for s3:// is not usable: {exc} (check "
            "AWS_PROFILE and ~/.aws/config, or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY)"
        ) from None
    if creds is None:
        raise StorageError(
            "no AWS credentials found for s3://: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run on an instance with a role), "
            "or pass --s3_access_key_id/--s3_secret_access_key; for a local S3 server also "
            "set AWS_ENDPOINT_URL (or --s3_endpoint_url)"
        )


def check_gcs(environ: Mapping[str, str]) -> None:
    """Application Default Credentials exist (or a local emulator is configured)."""
    if environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        raise StorageError(
            "gs:// needs Beam's GCP extra: pip install "
            "'apache-beam[gcp]==2.77.0' (or reinstall mailpulse)"
        ) from None
    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise StorageError(
            "no Google credentials found for gs://: run `gcloud auth application-default "
            "login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file "
            "(on GCP the attached service account is used); for a local emulator set "
            "STORAGE_EMULATOR_HOST=http://HOST:PORT"
        ) from None


def _prefer_anonymous_for_emulator(environ: Mapping[str, str]) -> None:
    if not environ.get("STORAGE_EMULATOR_HOST") or environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    creds = getattr(auth, "_Credentials", None)
    # Beam caches the credentials it found per process; seeding "none found" makes it
    # build the anonymous client the emulator accepts, without the retries.
    if creds is not None and hasattr(creds, "_credentials_init"):
        with creds._credentials_lock:
            if not creds._credentials_init:
                creds._credentials = None
                creds._credentials_init = True
