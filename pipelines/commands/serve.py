"""``mailpulse serve``: the webhook collector (SendGrid, Customers Mail Cloud, SES via SNS)."""

from __future__ import annotations

import os

NAME = "serve"
ORDER = 80
HELP = "receive provider webhooks, verify them and append them durably to the archive"
DESCRIPTION = """\
Runs an HTTP service (gunicorn processes, each an asyncio worker with header and body
deadlines and a connection bound; the app runs in a thread pool) with
  POST /webhooks/sendgrid  SendGrid Signed Event Webhook (+ optional HTTP Basic auth)
  POST /webhooks/cmc       Customers Mail Cloud (api_key parameter)
  POST /webhooks/ses       SES notifications through SNS (signature + topic allow-list)
  GET  /healthz            counters
Each accepted body is one line in archive/<provider>/YYYY/MM/DD/HH/<instance>-<seq>.json.open,
fsynced before the 2xx; the file is published as <instance>-<seq>.json.gz (what a load
reads) within --rotate-seconds. A route is on when its credentials are configured:
MAILPULSE_SENDGRID_PUBLIC_KEYS, MAILPULSE_CMC_API_KEY, MAILPULSE_SNS_TOPIC_ARNS.
Serve plain HTTP on 127.0.0.1 behind a TLS reverse proxy (see the README)."""

#: Beam's storage flags (``--s3_endpoint_url``, ``--s3_region_name``, ``--project`` ...)
#: are passed to Beam's FileSystems for shipping (the CLI rejects flags Beam does not know).
ACCEPTS_EXTRA_ARGS = True

ENV_KEYS = "MAILPULSE_SENDGRID_PUBLIC_KEYS"
ENV_MAX_AGE = "MAILPULSE_SIGNATURE_MAX_AGE"
ENV_CMC = "MAILPULSE_CMC_API_KEY"
ENV_BASIC = "MAILPULSE_SENDGRID_BASIC_AUTH"
ENV_TOPICS = "MAILPULSE_SNS_TOPIC_ARNS"


def _positive_int(value: str) -> int:
    import argparse

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more")
    return n


def _at_least_one(value: str) -> int:
    import argparse

    n = _positive_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return n


def _positive_float(value: str) -> float:
    import argparse

    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not n > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be more than 0")
    return n


def add_arguments(p):
    from ..collector.verification import DEFAULT_SIGNATURE_MAX_AGE

    p.add_argument(
        "--archive",
        default=None,
        metavar="URI",
        help="archive root: a directory, gs://BUCKET/PATH or s3://BUCKET/PATH "
        "(default: $MAILPULSE_DATA_DIR/archive)",
    )
    p.add_argument(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help="local directory for open files when they are shipped elsewhere "
        "(default for gs:// and s3:// archives: $MAILPULSE_DATA_DIR/spool)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument(
        "--workers", type=_positive_int, default=2, help="gunicorn worker processes (default: 2)"
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=8,
        help="threads per worker that verify and archive fully received posts "
        "(default: 8); reading requests never takes a thread",
    )
    p.add_argument(
        "--timeout",
        type=_positive_int,
        default=30,
        help="seconds before a stuck worker is restarted (default: 30)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="run Werkzeug's threaded development server instead of gunicorn",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request on stderr (query values redacted, headers never logged)",
    )

    g = p.add_argument_group(
        "slow and hostile clients", "limits of each worker's HTTP server (not applied by --dev)"
    )
    g.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a request's head must be complete this long after the connection "
        "opens (or after its first byte on a kept-alive connection); else 408 "
        "(default: 10)",
    )
    g.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="the whole body must arrive within this time after the head; else 408 (default: 30)",
    )
    g.add_argument(
        "--keepalive",
        type=_positive_float,
        default=75.0,
        metavar="SECONDS",
        help="close a kept-alive connection idle this long (default: 75)",
    )
    g.add_argument(
        "--max-connections",
        type=_at_least_one,
        default=1000,
        metavar="N",
        help="open connections per worker; past it the oldest idle or still-sending-"
        "their-head connections are closed (a burst may briefly reach 2N), a new "
        "one gets 503 at 2N or when all are busy (default: 1000)",
    )

    g = p.add_argument_group("verification")
    g.add_argument(
        "--signature-max-age",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help=f"reject SendGrid signatures older than this; 0 disables the check "
        f"(default: ${ENV_MAX_AGE} or {DEFAULT_SIGNATURE_MAX_AGE}, i.e. SendGrid's "
        f"24 h retry window plus 1 h)",
    )
    g.add_argument(
        "--sendgrid-public-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"a SendGrid verification key (base64 or PEM); repeat for rotation; "
        f"added to ${ENV_KEYS} (comma-separated)",
    )
    g.add_argument(
        "--sendgrid-basic-auth",
        default=None,
        metavar="USER:PASSWORD",
        help=f"require HTTP Basic auth on /webhooks/sendgrid (prefer ${ENV_BASIC}: "
        f"flags are visible in the process list)",
    )
    g.add_argument(
        "--sns-topic-arn",
        action="append",
        default=[],
        metavar="ARN",
        help=f"accept SNS messages from this topic; repeat; added to ${ENV_TOPICS}",
    )
    g.add_argument(
        "--sns-cert-dir",
        default=None,
        metavar="DIR",
        help="read SNS signing certificates from DIR (by the file name in "
        "SigningCertURL) instead of downloading them",
    )
    g.add_argument(
        "--sns-ca-file",
        default=None,
        metavar="PEM",
        help="only accept SNS signing certificates issued by a CA in this file",
    )
    g.add_argument(
        "--confirm-subscriptions",
        action="store_true",
        help="confirm SNS subscriptions (GET SubscribeURL); default: only log the URL",
    )

    g = p.add_argument_group("limits and files")
    g.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=10 * 1024 * 1024,
        help="larger posts get 413 (default: 10 MiB)",
    )
    g.add_argument(
        "--max-file-bytes",
        type=_positive_int,
        default=64 * 1024 * 1024,
        help="rotate an archive file at this size (default: 64 MiB)",
    )
    g.add_argument(
        "--rotate-seconds",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="publish each open archive file (close, gzip, rename to .json.gz, ship) "
        "at most S seconds after its first post, so a load sees an "
        "acknowledged post within S seconds (default: 60)",
    )
    g.add_argument(
        "--maintain-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often each worker retries failed uploads (default: 30)",
    )


def build_config(args, environ=None):
    """Flags and environment -> CollectorConfig (the only place configuration is read)."""
    from ..collector.app import CollectorConfig
    from ..collector.archive import is_remote
    from ..collector.sns import load_ca_file
    from ..collector.verification import (
        DEFAULT_SIGNATURE_MAX_AGE,
        KeyConfigError,
        parse_basic_credentials,
        parse_public_keys,
    )
    from ..config import data_dir, default_archive
    from ..errors import UsageError

    env = os.environ if environ is None else environ
    try:
        keys = parse_public_keys(
            [k for k in env.get(ENV_KEYS, "").split(",")] + args.sendgrid_public_key
        )
    except KeyConfigError as exc:
        raise UsageError(
            f"{exc}; copy the verification key from SendGrid (Settings > Mail Settings > "
            f"Event Webhook > Signature Verification) into {ENV_KEYS}"
        ) from None

    max_age = args.signature_max_age
    if max_age is None:
        raw = env.get(ENV_MAX_AGE, "").strip()
        if raw:
            if not raw.isdigit():
                raise UsageError(
                    f"{ENV_MAX_AGE}={raw!r} is not a number of seconds (0 disables the check)"
                )
            max_age = int(raw)
        else:
            max_age = DEFAULT_SIGNATURE_MAX_AGE

    basic = None
    basic_raw = args.sendgrid_basic_auth or env.get(ENV_BASIC)
    if basic_raw:
        try:
            basic = parse_basic_credentials(basic_raw)
        except ValueError as exc:
            raise UsageError(f"{exc} (in --sendgrid-basic-auth or {ENV_BASIC})") from None

    topics = [
        t.strip() for t in env.get(ENV_TOPICS, "").split(",") if t.strip()
    ] + args.sns_topic_arn
    for t in topics:
        if not t.startswith("arn:aws") or t.count(":") != 5:
            raise UsageError(f"{t!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")

    ca = []
    if args.sns_ca_file:
        try:
            ca = load_ca_file(args.sns_ca_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read --sns-ca-file {args.sns_ca_file}: {exc}") from None
    if args.sns_cert_dir and not os.path.isdir(args.sns_cert_dir):
        raise UsageError(f"--sns-cert-dir {args.sns_cert_dir} is not a directory")

    archive = args.archive or default_archive(env)
    spool = args.spool_dir
    beam_args = list(getattr(args, "extra", None) or [])  # checked by the CLI: Beam options
    if is_remote(archive):
        spool = spool or str((data_dir(env) / "spool").resolve())
        from ..storage import StorageError, configure

        try:  # before gunicorn forks: every worker inherits Beam's FileSystems options
            configure([archive], beam_args, environ=env)
        except StorageError as exc:
            raise UsageError(f"cannot ship to {archive}: {exc}") from None
    else:
        archive = os.path.abspath(archive)

    cfg = CollectorConfig(
        archive=archive,
        spool_dir=os.path.abspath(spool) if spool else None,
        sendgrid_keys=keys,
        signature_max_age=max_age,
        sendgrid_basic_auth=basic,
        cmc_api_key=env.get(ENV_CMC) or None,
        sns_topic_arns=topics,
        sns_cert_dir=args.sns_cert_dir,
        sns_ca_certs=ca,
        confirm_subscriptions=args.confirm_subscriptions,
        max_body_bytes=args.max_body_bytes,
        max_file_bytes=args.max_file_bytes,
        maintain_interval=args.maintain_interval,
        rotate_seconds=args.rotate_seconds,
    )
    if not any(cfg.enabled().values()):
        raise UsageError(
            f"no webhook is configured: set {ENV_KEYS} (SendGrid), {ENV_CMC} "
            f"(Customers Mail Cloud) and/or {ENV_TOPICS} (SES via SNS)"
        )
    try:
        cfg.local_dir.mkdir(parents=True, exist_ok=True)
        probe = cfg.local_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"cannot write to {cfg.local_dir}: {exc.strerror}; pick a writable "
            f"--archive / --spool-dir"
        ) from None
    return cfg


def run(args) -> int:
    import logging
    import sys

    from ..collector.app import Counters, create_app

    cfg = build_config(args)
    logging.getLogger("mailpulse.collector").setLevel(logging.INFO)
    on = ", ".join(p for p, e in cfg.enabled().items() if e)
    print(
        f"mailpulse serve: {on} on http://{args.host}:{args.port} -> {cfg.archive}"
        + (f" (spool {cfg.local_dir})" if cfg.ships else ""),
        file=sys.stderr,
        flush=True,
    )
    if args.dev:
        from ..collector.server import run_dev

        app = create_app(cfg)
        try:
            run_dev(app, args.host, args.port)
        finally:
            app.extensions["mailpulse"].shutdown()
        return 0

    from ..collector.server import CollectorServer, gunicorn_options
    from ..collector.worker import ServerLimits

    counters = Counters(shared=True)  # created before the fork: one set for all workers
    opts = gunicorn_options(args.host, args.port, args.workers or 1, args.timeout)
    limits = ServerLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keepalive=args.keepalive,
        max_connections=args.max_connections,
        max_body_bytes=cfg.max_body_bytes,
        threads=args.threads or 1,
        access_log=args.access_log,
    )
    CollectorServer(
        lambda: create_app(cfg, counters=counters),
        opts,
        limits=limits,
        on_reject=lambda reason: counters.add(f"rejected_{reason}"),
    ).run()
    return 0
