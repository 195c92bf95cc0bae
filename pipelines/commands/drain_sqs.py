"""``mailpulse drain-sqs``: SQS messages (SES notifications, bare or SNS-wrapped) into the archive."""

from __future__ import annotations

import os

NAME = "drain-sqs"
ORDER = 85
HELP = "move SES notifications from an SQS queue into the archive (deleting only what is durable)"
DESCRIPTION = """\
Receives messages from an SQS queue in batches of 10 (long polling), appends each body
as one line to <archive>/ses/YYYY/MM/DD/HH/<instance>-<seq>.json.open with the
collector's writer (fsynced), and only then deletes the batch from the queue. Files are
published as .json.gz (what a load reads) within --rotate-seconds and at the end.
SES notifications and events, bare (raw message delivery on) or inside SNS envelopes
(off), are read by the load; a body that is not JSON is archived too and becomes a dead
letter there, so nothing is lost and the queue drains.

Without --follow it stops when a long poll finds the queue empty; with --follow it runs
until SIGTERM / Ctrl-C, finishes the batch in hand and exits 0.

Credentials, region and endpoint come from the standard AWS chain (AWS_* variables incl.
AWS_ENDPOINT_URL, AWS_PROFILE, instance roles). For s3:// and gs:// archives, files go
through a local --spool-dir and are shipped as `mailpulse serve` ships them; Beam's
storage flags (--s3_endpoint_url ...) are accepted.

Exit codes: 0 done, 1 the archive or the queue failed (nothing undurable was deleted;
the message says what to fix), 2 usage errors."""

ACCEPTS_EXTRA_ARGS = True


def _wait_seconds(value: str) -> int:
    import argparse

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if not 1 <= n <= 20:
        raise argparse.ArgumentTypeError(f"{value!r}: SQS long polling waits 1 to 20 seconds")
    return n


def add_arguments(p):
    from .serve import _positive_float, _positive_int

    p.add_argument(
        "--queue-url",
        required=True,
        metavar="URL",
        help="https://sqs.REGION.amazonaws.com/ACCOUNT/NAME",
    )
    p.add_argument(
        "--archive",
        default=None,
        metavar="URI",
        help="archive root: a directory, gs://BUCKET/PATH or s3://BUCKET/PATH "
        "(default: $MAILPULSE_DATA_DIR/archive); messages land under <archive>/ses/",
    )
    p.add_argument(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help="local directory for open files of gs:// and s3:// archives "
        "(default: $MAILPULSE_DATA_DIR/spool)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep receiving until SIGTERM (default: stop when the queue is empty)",
    )
    p.add_argument(
        "--wait-seconds",
        type=_wait_seconds,
        default=20,
        metavar="S",
        help="long-poll wait with --follow (1-20, default: 20); it bounds how long "
        "SIGTERM waits for the receive in flight",
    )
    p.add_argument(
        "--rotate-seconds",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="publish open archive files at most S seconds after their first message (default: 60)",
    )
    p.add_argument(
        "--max-file-bytes",
        type=_positive_int,
        default=64 * 1024 * 1024,
        help="rotate an archive file at this size (default: 64 MiB)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object (the last line)"
    )


def run(args) -> int:
    import json
    import logging
    import signal
    import sys
    import threading

    from ..collector.archive import ArchiveWriter, Shipper, is_remote, new_instance_id
    from ..config import data_dir, default_archive
    from ..errors import UsageError
    from ..sqs import DrainError, DrainPolicy, SqsDrainer, sqs_client

    env = os.environ
    logging.getLogger("mailpulse").setLevel(logging.INFO)
    beam_args = list(getattr(args, "extra", None) or [])  # checked by the CLI: Beam options
    archive = args.archive or default_archive(env)
    if is_remote(archive):
        from ..storage import StorageError, configure

        try:
            configure([archive], beam_args, environ=env)
        except StorageError as exc:
            raise UsageError(f"cannot ship to {archive}: {exc}") from None
        local = os.path.abspath(args.spool_dir or str(data_dir(env) / "spool"))
        shipper = Shipper(archive)
    else:
        archive = os.path.abspath(archive)
        local, shipper = (
            (os.path.abspath(args.spool_dir), Shipper(archive))
            if args.spool_dir
            else (archive, None)
        )
    try:
        os.makedirs(local, exist_ok=True)
        probe = os.path.join(local, f".write-probe-{os.getpid()}")
        open(probe, "wb").close()
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"cannot write to {local}: {exc.strerror or exc}; pick a writable "
            f"--archive / --spool-dir"
        ) from None
    try:
        client = sqs_client(args.queue_url, env)
    except DrainError as exc:
        raise UsageError(str(exc)) from None

    writer = ArchiveWriter(
        local,
        instance=new_instance_id("sqs-"),
        max_bytes=args.max_file_bytes,
        rotate_seconds=args.rotate_seconds,
        shipper=shipper,
    )
    stop = threading.Event()
    policy = DrainPolicy(wait_seconds=args.wait_seconds)

    def on_signal(signum, frame):
        if not stop.is_set():
            print(
                f"mailpulse {NAME}: stopping after the batch in hand", file=sys.stderr, flush=True
            )
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    drainer = SqsDrainer(
        client, args.queue_url, writer, archive, follow=args.follow, policy=policy, stop=stop
    )
    try:
        writer.recover()  # publishes (and ships) what a killed drain-sqs or collector left
    except OSError as exc:
        print(
            f"mailpulse {NAME}: warning: the recovery sweep of {local} failed: {exc}",
            file=sys.stderr,
        )
    print(
        f"mailpulse {NAME}: {args.queue_url} -> {archive}/ses"
        + (f" (spool {local})" if shipper else "")
        + (" until SIGTERM" if args.follow else ""),
        file=sys.stderr,
        flush=True,
    )
    failure = None
    try:
        drainer.run()
    except DrainError as exc:
        failure = str(exc)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        try:
            drainer.close()
        except OSError as exc:
            failure = failure or (
                f"publishing the archive files failed: {exc}; they stay in {local} "
                f"and the next drain-sqs or serve there publishes them"
            )
    stats = drainer.stats
    if failure:
        stats.errors.append(failure)
        print(f"mailpulse {NAME}: error: {failure}", file=sys.stderr)
    if stats.unshipped_files:
        msg = (
            f"{stats.unshipped_files} archive file(s) could not be shipped to {archive}; they are "
            f"kept in {local} and shipped by the next drain-sqs or serve with that spool "
            f"(see the warnings above for the fix)"
        )
        stats.errors.append(msg)
        print(f"mailpulse {NAME}: error: {msg}", file=sys.stderr)
    if args.json:
        print(json.dumps(stats.as_dict()))
    else:
        extra = f" ({stats.not_json} not JSON: dead letters at load)" if stats.not_json else ""
        print(
            f"received {stats.received}, archived {stats.archived}, deleted {stats.deleted}"
            f"{extra}; {stats.files_published} file(s) published under {archive}/ses "
            f"in {stats.seconds:.1f} s"
            + (
                f"; {stats.delete_failures} delete(s) failed (archived; redelivered copies "
                f"dedupe at load)"
                if stats.delete_failures
                else ""
            )
        )
    return 1 if stats.errors else 0
