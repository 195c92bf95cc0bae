"""``mailpulse drain-sqs`` against moto's real SQS (and SNS, S3) server (issue 11, item 3).

Messages go in as they arrive from AWS: SES records sent to the queue directly, SES
notifications published to SNS topics subscribed with raw message delivery on and off
(moto delivers the SNS envelope, pretty-printed as SNS does), garbage on one line and on
several, and a large notification. They come out in the archive (read back with
``mailpulse normalize``: every event of every original is there, the garbage as dead
letters), the queue is empty, and nothing is deleted when the archive cannot be written.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from pipelines.normalizers import normalize_bytes
from pipelines.sqs import archive_line

PAYLOADS = ROOT / "tests" / "payloads" / "ses"

pytestmark = pytest.mark.slow


# -- how bodies become lines -----------------------------------------------------------------
@pytest.mark.parametrize(
    "body,line,is_json",
    [
        ('{"a": 1}', b'{"a": 1}', True),
        (
            '{\n  "Type" : "Notification",\n  "Message" : "{\\"x\\":1}"\n}\n',
            b'{"Type" : "Notification","Message" : "{\\"x\\":1}"}',
            True,
        ),
        ("not json {", b"not json {", False),
        ("line one\nline two\r\n", b'"line one\\nline two\\r\\n"', False),
        ("   ", b'"   "', False),
        ('{"k": "caf\u00e9 \u65e5\u672c"}', '{"k": "caf\u00e9 \u65e5\u672c"}'.encode(), True),
    ],
)
def test_archive_line(body, line, is_json):
    got, j = archive_line(body)
    assert (got, j) == (line, is_json)
    assert b"\n" not in got and b"\r" not in got
    if is_json:
        assert json.loads(got) == json.loads(body)
    elif body.strip() and "\n" not in body:
        assert got.decode() == body  # stored exactly
    else:
        assert json.loads(got) == body  # exactly recoverable


# -- helpers ---------------------------------------------------------------------------------
def payload(name: str) -> str:
    return (PAYLOADS / name).read_text()


def large_bounce(n: int = 1400) -> str:
    doc = json.loads(payload("notification_bounce_dsn.json"))
    doc["bounce"]["bouncedRecipients"] = [
        {
            "emailAddress": f"big{i:05d}@example.org",
            "status": "5.1.1",
            "action": "failed",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
        }
        for i in range(n)
    ]
    return json.dumps(doc, indent=1)


def event_ids(body: str, ctx) -> set[str]:
    res = normalize_bytes(body.encode(), ctx, "ses")
    assert not res.dead_letters, res.dead_letters
    return {e["event_id"] for e in res.events}


def queue_counts(sqs, url) -> tuple[int, int]:
    a = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def subscribe(moto_server, queue_url: str, name: str, raw: bool) -> str:
    sqs, sns = moto_server.client("sqs"), moto_server.client("sns")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name=name)["TopicArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    return topic


def fill_queue(moto_server, queue_url: str) -> tuple[list[str], list[str]]:
    """(SES documents whose events must arrive, garbage bodies) -- 9 messages."""
    sqs, sns = moto_server.client("sqs"), moto_server.client("sns")
    raw_topic = subscribe(moto_server, queue_url, queue_url.rsplit("/", 1)[1] + "-raw", True)
    env_topic = subscribe(moto_server, queue_url, queue_url.rsplit("/", 1)[1] + "-env", False)
    docs = []
    for name in ("event_bounce.json", "notification_delivery.json"):  # straight to SQS
        sqs.send_message(QueueUrl=queue_url, MessageBody=payload(name))
        docs.append(payload(name))
    for name in ("notification_bounce_dsn.json", "event_delivery.json"):  # raw delivery on
        sns.publish(TopicArn=raw_topic, Message=payload(name))
        docs.append(payload(name))
    for name in ("notification_complaint_feedback.json", "event_open.json"):  # SNS envelope
        sns.publish(TopicArn=env_topic, Message=payload(name))
        docs.append(payload(name))
    big = large_bounce()
    assert 150_000 < len(big) < 256 * 1024
    sqs.send_message(QueueUrl=queue_url, MessageBody=big)
    docs.append(big)
    garbage = ["this is not JSON {", "<html>\n<body>502 Bad Gateway</body>\n</html>\n"]
    for g in garbage:
        sqs.send_message(QueueUrl=queue_url, MessageBody=g)
    return docs, garbage


def archive_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json.gz"))


def normalized(cli, files) -> tuple[set[str], list[dict]]:
    r = cli("normalize", "--provider", "ses", *files)
    assert r.returncode in (0, 3), r.stderr[-2000:]
    events = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    dead = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    ids = [e["event_id"] for e in events]
    return set(ids), dead


# -- the command -----------------------------------------------------------------------------
def test_drain_every_kind_of_message_into_a_local_archive(
    tmp_path, sqs_queue, moto_server, cli, ctx
):
    docs, garbage = fill_queue(moto_server, sqs_queue.url)
    archive = tmp_path / "archive"
    r = cli("drain-sqs", "--queue-url", sqs_queue.url, "--archive", archive, "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    n = len(docs) + len(garbage)
    assert (summary["received"], summary["archived"], summary["deleted"]) == (n, n, n), summary
    assert summary["not_json"] == 2 and summary["errors"] == [] and summary["stopped_by"] == "empty"
    assert queue_counts(moto_server.client("sqs"), sqs_queue.url) == (0, 0)

    files = archive_files(archive)
    assert files and all(f.relative_to(archive).parts[0] == "ses" for f in files)
    assert not list(archive.rglob("*.open")) and not list(archive.rglob(".*"))
    lines = [ln for f in files for ln in gzip.decompress(f.read_bytes()).split(b"\n") if ln]
    assert len(lines) == n
    want = set().union(*(event_ids(d, ctx) for d in docs))
    assert len(want) > 1400  # the large notification alone has 1,400 recipients
    got, dead = normalized(cli, files)
    assert got == want
    assert len(dead) == 2
    # the garbage is kept exactly: as received on one line, as a JSON string otherwise
    raws = sorted(d["raw"] for d in dead)
    assert raws == sorted([garbage[0], json.dumps(garbage[1])])
    assert json.loads(json.dumps(garbage[1])) == garbage[1]
    # and the load counts every one of them
    r = cli(
        "load",
        "--archive",
        archive,
        "--warehouse",
        f"duckdb:///{tmp_path / 'wh.duckdb'}",
        "--json",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["events_loaded"] == len(want), report
    assert report["dead_letters"] == 2 and report["files_read"] == len(files), report


def test_a_failed_archive_write_deletes_nothing(tmp_path, sqs_queue, moto_server, cli):
    sqs = moto_server.client("sqs")
    bodies = [payload("event_bounce.json"), payload("event_send.json"), "garbage"]
    for b in bodies:
        sqs.send_message(QueueUrl=sqs_queue.url, MessageBody=b)
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "ses").write_text(
        "a file where the provider directory should be"
    )  # root cannot mkdir through it
    r = cli("drain-sqs", "--queue-url", sqs_queue.url, "--archive", archive, "--json", timeout=120)
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["deleted"] == 0 and summary["archived"] == 0 and summary["received"] >= 1
    assert (
        "nothing of this batch was deleted" in r.stderr and "make the archive writable" in r.stderr
    )
    # released at once (visibility 0): every message is still there and receivable
    got = []
    for _ in range(5):
        got += sqs.receive_message(
            QueueUrl=sqs_queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if len(got) >= len(bodies):
            break
    assert sorted(m["Body"] for m in got) == sorted(bodies)
    # fixed (and the test's own receives released): the next run archives and deletes them
    (archive / "ses").unlink()
    sqs.change_message_visibility_batch(
        QueueUrl=sqs_queue.url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(got)
        ],
    )
    r = cli("drain-sqs", "--queue-url", sqs_queue.url, "--archive", archive, "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["deleted"] == len(bodies)
    assert queue_counts(sqs, sqs_queue.url) == (0, 0)


def test_follow_publishes_within_rotate_seconds_and_stops_on_sigterm(
    tmp_path, sqs_queue, moto_server
):
    sqs = moto_server.client("sqs")
    archive = tmp_path / "archive"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "drain-sqs",
            "--queue-url",
            sqs_queue.url,
            "--archive",
            str(archive),
            "--follow",
            "--wait-seconds",
            "1",
            "--rotate-seconds",
            "2",
            "--json",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr", "w"),
        text=True,
    )
    delays = []
    try:
        deadline = time.monotonic() + 60
        while "until SIGTERM" not in (tmp_path / "stderr").read_text():  # started
            assert time.monotonic() < deadline and proc.poll() is None, (
                tmp_path / "stderr"
            ).read_text()
            time.sleep(0.05)
        for i in range(3):
            body = json.dumps({"n": i, "note": "not an SES record: a dead letter at load"})
            t = time.monotonic()
            sqs.send_message(QueueUrl=sqs_queue.url, MessageBody=body)
            while time.monotonic() - t < 10:
                if any(
                    body.encode() in gzip.decompress(f.read_bytes()) for f in archive_files(archive)
                ):
                    break
                time.sleep(0.05)
            delays.append(time.monotonic() - t)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    err = (tmp_path / "stderr").read_text()
    print(
        "\ndrain-sqs --rotate-seconds 2 --wait-seconds 1: sent -> published in "
        + ", ".join(f"{d:.2f}" for d in delays)
        + " s"
    )
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped_by"] == "signal"
    assert summary["received"] == summary["archived"] == summary["deleted"] == 3
    # received within the 1 s long poll, published at most 2 s after it was archived
    assert max(delays) <= 2.0 + 1.0 + 0.5, delays
    assert queue_counts(sqs, sqs_queue.url) == (0, 0)
    assert not list(archive.rglob("*.open"))


def test_kill_9_loses_nothing_and_the_next_run_publishes_the_open_files(
    tmp_path, sqs_queue, moto_server, cli
):
    sqs = moto_server.client("sqs")
    sqs.set_queue_attributes(QueueUrl=sqs_queue.url, Attributes={"VisibilityTimeout": "2"})
    bodies = [json.dumps({"n": i}) for i in range(40)]
    for i in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=sqs_queue.url,
            Entries=[{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])],
        )
    archive = tmp_path / "archive"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "drain-sqs",
            "--queue-url",
            sqs_queue.url,
            "--archive",
            str(archive),
            "--follow",
            "--wait-seconds",
            "1",
            "--rotate-seconds",
            "600",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and queue_counts(sqs, sqs_queue.url)[0] > 20:
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no close, no publish
    proc.wait(10)
    open_files = list(archive.rglob("*.json.open"))
    assert open_files and not archive_files(archive)  # durable but not visible yet
    time.sleep(2.5)  # what the killed process received and did not delete becomes visible again
    r = cli("drain-sqs", "--queue-url", sqs_queue.url, "--archive", archive, "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert queue_counts(sqs, sqs_queue.url) == (0, 0)
    assert not list(archive.rglob("*.open"))
    lines = [
        ln.decode()
        for f in archive_files(archive)
        for ln in gzip.decompress(f.read_bytes()).split(b"\n")
        if ln
    ]
    assert set(lines) == set(bodies)  # every message, copies only for redeliveries
    print(
        f"\nkill -9 mid-drain: {len(lines)} lines for {len(bodies)} messages "
        f"({len(lines) - len(bodies)} redelivered copies, deduped at load by event_id)"
    )


def test_drain_into_s3_ships_through_the_spool(tmp_path, sqs_queue, s3_bucket, moto_server, cli):
    sqs, s3 = moto_server.client("sqs"), moto_server.client("s3")
    bodies = [payload("event_bounce.json"), payload("event_delivery.json")]
    for b in bodies:
        sqs.send_message(QueueUrl=sqs_queue.url, MessageBody=b)
    spool = tmp_path / "spool"
    r = cli(
        "drain-sqs",
        "--queue-url",
        sqs_queue.url,
        "--archive",
        f"{s3_bucket}/events",
        "--spool-dir",
        spool,
        "--json",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["deleted"] == 2 and summary["unshipped_files"] == 0
    bucket = s3_bucket.split("://")[1]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("events/ses/") and k.endswith(".json.gz") for k in keys)
    lines = [
        ln
        for k in keys
        for ln in gzip.decompress(s3.get_object(Bucket=bucket, Key=k)["Body"].read()).split(b"\n")
        if ln
    ]
    assert sorted(lines) == sorted(archive_line(b)[0] for b in bodies)
    assert not list(spool.rglob("*.json*"))
    assert queue_counts(sqs, sqs_queue.url) == (0, 0)


def test_usage_errors_name_the_fix(tmp_path, cli, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    r = cli("drain-sqs", "--queue-url", url, "--archive", tmp_path / "a", timeout=60)
    assert r.returncode == 2 and "AWS_ACCESS_KEY_ID" in r.stderr, r.stderr
    r = cli("drain-sqs", "--queue-url", url, "--archive", tmp_path / "a", "--folow", timeout=60)
    assert r.returncode == 2 and "did you mean --follow" in r.stderr, r.stderr


# -- the loop, in-process (real moto SQS; the clock and the sleep injected) -------------------
class Recording:
    """Forwards to a real boto3 client and records each receive's WaitTimeSeconds."""

    def __init__(self, client):
        self.client, self.waits = client, []

    def receive_message(self, **kw):
        self.waits.append(kw["WaitTimeSeconds"])
        return self.client.receive_message(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_the_long_poll_is_shortened_to_the_next_publication(tmp_path, sqs_queue, moto_server):
    from datetime import datetime, timedelta, timezone

    from pipelines.collector.archive import ArchiveWriter
    from pipelines.sqs import DrainPolicy, SqsDrainer

    now = [datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone.utc)]
    writer = ArchiveWriter(tmp_path, instance="t", rotate_seconds=10, clock=lambda: now[0])
    sqs = Recording(moto_server.client("sqs"))
    sqs.send_message(QueueUrl=sqs_queue.url, MessageBody='{"n":1}')
    d = SqsDrainer(
        sqs, sqs_queue.url, writer, str(tmp_path), follow=True, policy=DrainPolicy(wait_seconds=20)
    )

    def after_batch(stats):  # 8.5 s pass (injected) while the batch is handled
        now[0] += timedelta(seconds=8.5)

    d.on_batch = after_batch
    real_receive = sqs.receive_message

    def receive_twice(**kw):
        out = real_receive(**kw)
        if len(sqs.waits) == 2:
            d.stop.set()
        return out

    sqs.receive_message = receive_twice
    stats = d.run()
    # nothing open: the full 20 s long poll; then the file is due 9 s after its line (10 s
    # minus the 1 s margin), 8.5 s of which have passed: a short poll, to publish in time
    assert sqs.waits == [20, 0]
    assert stats.received == stats.archived == stats.deleted == 1
    assert stats.stopped_by == "signal"
    now[0] += timedelta(seconds=0.5)
    assert writer.publish_due() == 1
    d.close()


def test_follow_backs_off_while_the_endpoint_is_down_then_stops(tmp_path, sqs_queue, moto_server):
    import boto3
    from botocore.config import Config
    from serve_support import TcpProxy

    from pipelines.backoff import Backoff
    from pipelines.collector.archive import ArchiveWriter
    from pipelines.sqs import DrainError, DrainPolicy, SqsDrainer

    dead = TcpProxy(1)  # never up: connection refused
    client = boto3.client(
        "sqs",
        endpoint_url=dead.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )
    writer = ArchiveWriter(tmp_path, instance="t")
    slept = []
    d = SqsDrainer(
        client,
        sqs_queue.url,
        writer,
        str(tmp_path),
        follow=True,
        policy=DrainPolicy(receive_backoff=Backoff(initial=1, maximum=4)),
    )

    def sleep(seconds, stop):
        slept.append(seconds)
        if len(slept) == 4:
            stop.set()  # SIGTERM

    d.sleep = sleep
    stats = d.run()
    assert slept == [1, 2, 4, 4] and stats.stopped_by == "signal" and stats.received == 0
    # a receive backoff with an attempts limit ends the run once it is used up
    slept.clear()
    d = SqsDrainer(
        client,
        sqs_queue.url,
        writer,
        str(tmp_path),
        follow=True,
        policy=DrainPolicy(receive_backoff=Backoff(initial=1, maximum=4, attempts=3)),
    )
    d.sleep = lambda seconds, stop: slept.append(seconds)
    with pytest.raises(
        DrainError, match="kept failing.*receive_backoff used up.*cannot be reached"
    ):
        d.run()
    assert slept == [1, 2]
    # without --follow the same failure ends the run, naming what to check
    d = SqsDrainer(client, sqs_queue.url, writer, str(tmp_path), follow=False)
    with pytest.raises(DrainError, match="endpoint cannot be reached.*AWS_ENDPOINT_URL"):
        d.run()
