"""The collector's archive writer: one line per post, fsynced; hourly and size rotation;
gzip on close; crash recovery; shipping closed files through Beam's FileSystems (to a
local directory standing in for gs:// / s3://, through the same code path)."""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipelines.collector import CollectorConfig, create_app
from pipelines.collector import archive as archive_mod
from pipelines.collector.archive import ArchiveWriter, Shipper, compact_line
from pipelines.records import decompress, iter_records

T0 = datetime(2026, 11, 23, 10, 59, 58, tzinfo=timezone.utc)


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def files(root: Path, pattern="*.json*"):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(pattern))


def lines_of(path: Path) -> list[bytes]:
    return [r.raw for r in iter_records(decompress(path.read_bytes()))]


@pytest.mark.parametrize(
    "body,expected",
    [
        (b'[{"a":1}]', b'[{"a":1}]'),
        (b'[{"a":1}]\r\n', b'[{"a":1}]'),
        (b'  {"a": "x  y"}  ', b'{"a": "x  y"}'),
        (b'[\n  {\n    "a": 1.50,\n    "b": "\\n"\n  }\n]\n', b'[{"a": 1.50,"b": "\\n"}]'),
        (b'{"a":\r\n\t[1,\r\n2]}', b'{"a":[1,2]}'),
    ],
)
def test_compact_line(body, expected):
    out = compact_line(body)
    assert out == expected
    assert json.loads(out) == json.loads(body)


def test_hour_rotation_gzip_and_idle_close(tmp_path):
    clock = Clock()
    events = []
    w = ArchiveWriter(tmp_path, instance="w1", clock=clock, on_event=lambda n, k: events.append(n))
    p1 = w.append("sendgrid", b'[{"n":1}]')
    assert p1.relative_to(tmp_path).as_posix() == "sendgrid/2026/11/23/10/w1-000001.json.open"
    clock.t = T0 + timedelta(seconds=3)  # 11:00:01
    p2 = w.append("sendgrid", b'[{"n":2}]')
    assert p2.relative_to(tmp_path).as_posix() == "sendgrid/2026/11/23/11/w1-000002.json.open"
    w.append("ses", b'{"Type":"Notification"}')
    w.process_closed()
    assert files(tmp_path) == [
        "sendgrid/2026/11/23/10/w1-000001.json.gz",
        "sendgrid/2026/11/23/11/w1-000002.json.open",
        "ses/2026/11/23/11/w1-000003.json.open",
    ]
    assert (
        gzip.decompress((tmp_path / "sendgrid/2026/11/23/10/w1-000001.json.gz").read_bytes())
        == b'[{"n":1}]\n'
    )
    # nothing arrives for an hour: maintenance closes the idle files
    clock.t = T0 + timedelta(hours=1, seconds=3)
    w.maintain()
    assert files(tmp_path) == [
        "sendgrid/2026/11/23/10/w1-000001.json.gz",
        "sendgrid/2026/11/23/11/w1-000002.json.gz",
        "ses/2026/11/23/11/w1-000003.json.gz",
    ]
    assert events.count("archive_files") == 3 and events.count("archive_files_closed") == 3


def test_size_rotation(tmp_path):
    w = ArchiveWriter(tmp_path, instance="w1", clock=Clock(), max_bytes=100)
    line = json.dumps({"pad": "x" * 30}).encode()  # 42 bytes + newline
    for _ in range(5):
        w.append("cmc", line)
    w.close()
    got = files(tmp_path)
    assert got == [f"cmc/2026/11/23/10/w1-00000{i}.json.gz" for i in (1, 2, 3)]
    assert [len(lines_of(tmp_path / g)) for g in got] == [2, 2, 1]
    # one post larger than the limit still goes in (alone) rather than failing
    w2 = ArchiveWriter(tmp_path / "big", instance="w2", clock=Clock(), max_bytes=10)
    w2.append("cmc", line)
    w2.append("cmc", line)
    assert len(files(tmp_path / "big")) == 2


def test_recovery_takes_over_dead_workers_files_only(tmp_path):
    d = tmp_path / "sendgrid/2026/11/23/09"
    d.mkdir(parents=True)
    # a worker killed mid-write: two acknowledged lines and a torn one
    (d / "dead-1-000001.json.open").write_bytes(b'[{"n":1}]\n[{"n":2}]\n[{"n":3')
    # a worker killed after the rename and before the unlink: both exist
    (d / "dead-1-000002.json.gz").write_bytes(gzip.compress(b'[{"n":4}]\n'))
    (d / "dead-1-000002.json.open").write_bytes(b'[{"n":4}]\n')
    # a compression cut short
    (d / "dead-2-000001.json.open").write_bytes(b'[{"n":5}]\n')
    (d / ".dead-2-000001.json.gz.99.tmp").write_bytes(b"\x1f\x8b partial")
    # a file that only got a torn line (never acknowledged): nothing to keep
    (d / "dead-3-000001.json.open").write_bytes(b'[{"n":')
    # an open file of an earlier version (open files were named .json then)
    (d / "old-4-000001.json").write_bytes(b'[{"n":7}]\n')
    # a live worker's open file (it holds the lock)
    live = d / "live-7-000001.json.open"
    live.write_bytes(b'[{"n":6}]\n')
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        w = ArchiveWriter(tmp_path, instance="new", clock=Clock())
        assert w.recover() == 4
        assert files(tmp_path) == [
            "sendgrid/2026/11/23/09/dead-1-000001.json.gz",
            "sendgrid/2026/11/23/09/dead-1-000002.json.gz",
            "sendgrid/2026/11/23/09/dead-2-000001.json.gz",
            "sendgrid/2026/11/23/09/live-7-000001.json.open",
            "sendgrid/2026/11/23/09/old-4-000001.json.gz",
        ]
        assert lines_of(d / "old-4-000001.json.gz") == [b'[{"n":7}]']
        assert lines_of(d / "dead-1-000001.json.gz") == [b'[{"n":1}]', b'[{"n":2}]']
        assert lines_of(d / "dead-2-000001.json.gz") == [b'[{"n":5}]']
        assert not list(d.glob(".*.tmp"))
    finally:
        os.close(fd)
    assert w.recover() == 1  # released: now it is taken over too
    assert lines_of(d / "live-7-000001.json.gz") == [b'[{"n":6}]']


def test_shipping_to_another_filesystem_deletes_locally_only_after_confirmation(tmp_path):
    spool, remote = tmp_path / "spool", tmp_path / "remote-bucket"
    events = []
    clock = Clock()
    w = ArchiveWriter(
        spool,
        instance="w1",
        clock=clock,
        shipper=Shipper(str(remote)),
        on_event=lambda n, k: events.append(n),
    )
    w.append("sendgrid", b'[{"n":1}]')
    w.append("sendgrid", b'[{"n":2}]')
    clock.t += timedelta(hours=1)
    w.maintain()
    assert files(remote) == ["sendgrid/2026/11/23/10/w1-000001.json.gz"]
    assert lines_of(remote / "sendgrid/2026/11/23/10/w1-000001.json.gz") == [
        b'[{"n":1}]',
        b'[{"n":2}]',
    ]
    assert files(spool) == []
    assert events.count("archive_files_shipped") == 1


def test_failed_upload_keeps_the_file_and_is_retried(tmp_path):
    spool = tmp_path / "spool"
    blocker = tmp_path / "bucket"
    blocker.write_text("a file where the bucket directory should be")
    events = []
    w = ArchiveWriter(
        spool,
        instance="w1",
        clock=Clock(),
        shipper=Shipper(str(blocker / "archive")),
        on_event=lambda n, k: events.append(n),
    )
    w.append("ses", b'{"Type":"Notification"}')
    w.close()
    assert files(spool) == ["ses/2026/11/23/10/w1-000001.json.gz"]  # kept
    assert "ship_failures" in events
    blocker.unlink()
    blocker.mkdir()
    assert w.ship_pending() == 1
    assert files(spool) == [] and files(blocker) == ["archive/ses/2026/11/23/10/w1-000001.json.gz"]


def test_app_ships_through_spool_dir_on_shutdown(tmp_path):
    remote, spool = tmp_path / "remote", tmp_path / "spool"
    config = CollectorConfig(
        archive=str(remote), spool_dir=str(spool), cmc_api_key="k", maintain_interval=0
    )
    assert config.ships
    app = create_app(config, now=Clock())
    c = app.test_client()
    body = b'{"event_type":"bounces","event":{"bounces":[]}}'
    assert (
        c.post("/webhooks/cmc?api_key=k", data=body, content_type="application/json").status_code
        == 200
    )
    assert files(spool, "*.json.open") and not remote.exists()
    app.extensions["mailpulse"].shutdown()
    [name] = files(remote)
    assert name.startswith("cmc/2026/11/23/10/") and name.endswith(".json.gz")
    assert lines_of(remote / name) == [body]
    health = c.get("/healthz").get_json()["counters"]
    assert health["archive_files"] == {"opened": 1, "closed": 1, "shipped": 1, "ship_failures": 0}


def test_a_failed_disk_write_answers_503_and_leaves_no_partial_line(tmp_path, monkeypatch):
    config = CollectorConfig(archive=str(tmp_path / "a"), cmc_api_key="k", maintain_interval=0)
    c = create_app(config, now=Clock()).test_client()
    ok1 = b'{"event_type":"bounces","event":{"bounces":[]},"n":1}'
    assert (
        c.post("/webhooks/cmc?api_key=k", data=ok1, content_type="application/json").status_code
        == 200
    )

    real_write = os.write
    calls = []

    def disk_full(fd, data):  # the disk fills up half-way through the line
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_mod.os, "write", disk_full)
    bad = b'{"event_type":"bounces","event":{"bounces":[]},"n":2}'
    r = c.post("/webhooks/cmc?api_key=k", data=bad, content_type="application/json")
    assert (r.status_code, r.get_json()) == (503, {"error": "archive_write_failed"})
    monkeypatch.setattr(archive_mod.os, "write", real_write)
    ok3 = b'{"event_type":"bounces","event":{"bounces":[]},"n":3}'
    assert (
        c.post("/webhooks/cmc?api_key=k", data=ok3, content_type="application/json").status_code
        == 200
    )
    got = []
    for name in files(tmp_path / "a"):
        got += lines_of(tmp_path / "a" / name)
    assert sorted(got) == sorted([ok1, ok3])
    counters = c.get("/healthz").get_json()["counters"]
    assert counters["accepted"] == 2 and counters["write_errors"] == 1
