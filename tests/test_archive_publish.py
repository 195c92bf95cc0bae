"""Files are immutable once visible (issue 12, item 3).

The writer appends to ``*.json.open`` files that a load never lists, and publishes them
(gzip to a hidden temporary, fsync, atomic rename to ``*.json.gz``) every
``rotate_seconds`` as well as by hour and size. The clock is injected; one test runs a
real ``mailpulse serve --rotate-seconds 2`` and measures the time from 200 to published.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from serve_support import Serve, cmc_body

from pipelines.collector import CollectorConfig, create_app
from pipelines.collector import archive as archive_mod
from pipelines.collector.archive import ArchiveError, ArchiveWriter, spool_status
from pipelines.records import decompress, iter_records
from pipelines.sources import Source, accept

T0 = datetime(2026, 11, 23, 10, 0, 5, tzinfo=timezone.utc)


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def visible(root: Path) -> dict[str, str]:
    """What a load would read (the load's own name filter, pipelines.sources.accept)
    -> sha256 of the bytes."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and accept(Source("ses", str(root)), p.name) is None:
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def lines_in(root: Path, names) -> list[bytes]:
    got = []
    for n in names:
        got += [r.raw for r in iter_records(decompress((root / n).read_bytes()))]
    return got


def test_open_files_are_never_visible_and_publish_after_rotate_seconds(tmp_path):
    clock = Clock()
    w = ArchiveWriter(tmp_path, instance="w1", clock=clock, rotate_seconds=10)
    p = w.append("sendgrid", b'[{"n":1}]')
    assert p.name == "w1-000001.json.open"
    assert visible(tmp_path) == {}
    # 9 s rotate margin: min(2, 10/10) = 1 s before the deadline, so due at 9 s
    assert w.seconds_until_due() == pytest.approx(9.01)
    clock.advance(8.5)
    w.append("sendgrid", b'[{"n":2}]')  # same file: not due yet
    assert w.publish_due() == 0 and visible(tmp_path) == {}
    assert w.seconds_until_due() == pytest.approx(0.51)
    clock.advance(0.5)  # 9 s after the first line
    assert w.publish_due() == 1
    v = visible(tmp_path)
    assert list(v) == ["sendgrid/2026/11/23/10/w1-000001.json.gz"]
    assert lines_in(tmp_path, v) == [b'[{"n":1}]', b'[{"n":2}]']
    assert not list(tmp_path.rglob("*.open")) and not list(tmp_path.rglob("*.tmp"))
    assert w.seconds_until_due() is None  # nothing open: nothing to wake up for


def test_a_post_after_the_deadline_goes_to_a_new_file(tmp_path):
    clock = Clock()
    w = ArchiveWriter(tmp_path, instance="w1", clock=clock, rotate_seconds=60)
    w.append("ses", b'{"n":1}')
    clock.advance(58)  # due (60 - 2 s margin)
    p2 = w.append("ses", b'{"n":2}')
    assert p2.name == "w1-000002.json.open"
    assert w.seconds_until_due() == 0.0  # the closed file waits: wake up now
    assert w.process_closed() == 1
    assert list(visible(tmp_path)) == ["ses/2026/11/23/10/w1-000001.json.gz"]


def test_visible_files_never_change_and_no_line_is_visible_twice(tmp_path):
    """A random-ish sequence of posts, clock steps, hour changes and size rotations:
    every snapshot of what a load can list only grows; no listed file ever changes or
    disappears; at the end every line is listed exactly once."""
    clock = Clock(datetime(2026, 11, 23, 10, 58, 0, tzinfo=timezone.utc))
    w = ArchiveWriter(tmp_path, instance="w1", clock=clock, rotate_seconds=7, max_bytes=200)
    seen: dict[str, str] = {}
    written = []
    for i in range(300):
        line = f'{{"n":{i},"pad":"{"x" * (i % 40)}"}}'.encode()
        w.append(("sendgrid", "ses", "cmc")[i % 3], line)
        written.append(line)
        clock.advance(0.9 if i % 11 else 3.7)
        if i % 5 == 0:
            w.publish_due()
        now = visible(tmp_path)
        for name, digest in seen.items():
            assert now.get(name) == digest, f"{name} changed or vanished after it was visible"
        seen = now
    w.close()
    final = visible(tmp_path)
    assert all(final[n] == d for n, d in seen.items())
    got = lines_in(tmp_path, sorted(final))
    assert sorted(got) == sorted(written) and len(got) == len(set(got))
    assert not list(tmp_path.rglob("*.open"))


def test_crash_between_rename_and_unlink_leaves_one_visible_name(tmp_path):
    d = tmp_path / "ses/2026/11/23/10"
    d.mkdir(parents=True)
    (d / "dead-1-000001.json.open").write_bytes(b'{"n":1}\n')
    (d / "dead-1-000001.json.gz").write_bytes(gzip.compress(b'{"n":1}\n'))
    assert list(visible(tmp_path)) == ["ses/2026/11/23/10/dead-1-000001.json.gz"]
    w = ArchiveWriter(tmp_path, instance="new", clock=Clock())
    assert w.recover() == 1
    assert sorted(p.name for p in d.iterdir()) == ["dead-1-000001.json.gz"]
    assert lines_in(tmp_path, visible(tmp_path)) == [b'{"n":1}']


def test_append_many_is_all_or_nothing(tmp_path, monkeypatch):
    w = ArchiveWriter(tmp_path, instance="w1", clock=Clock())
    w.append_many("ses", [b'{"n":1}', b'{"n":2}'])
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_mod.os, "write", half_then_full)
    with pytest.raises(ArchiveError, match="No space left"):
        w.append_many("ses", [b'{"n":3}', b'{"n":4}'])
    monkeypatch.setattr(archive_mod.os, "write", real_write)
    w.close()
    assert sorted(lines_in(tmp_path, visible(tmp_path))) == [b'{"n":1}', b'{"n":2}']


def test_healthz_degraded_while_uploads_fail_then_ok(tmp_path):
    """A real failure of the shipping path: a file where the destination directory
    should be (root cannot write through it either)."""
    spool, dest = tmp_path / "spool", tmp_path / "bucket"
    dest.write_text("a file where the destination directory should be")
    clock = Clock()
    config = CollectorConfig(
        archive=str(dest / "archive"),
        spool_dir=str(spool),
        cmc_api_key="k",
        maintain_interval=0,
        rotate_seconds=5,
    )
    app = create_app(config, now=clock)
    c = app.test_client()
    assert c.get("/healthz").get_json()["status"] == "ok"
    for i in range(3):
        assert (
            c.post(
                "/webhooks/cmc?api_key=k", data=cmc_body(i), content_type="application/json"
            ).status_code
            == 200
        )
        clock.advance(6)
        app.extensions["mailpulse"].writer().maintain()
    h = c.get("/healthz").get_json()
    assert h["status"] == "degraded", h
    assert h["unshipped"]["files"] == 3 and h["unshipped"]["bytes"] > 0
    assert h["unshipped"]["oldest_age_seconds"] >= 0
    err = h["ship_error"]
    assert "NotADirectoryError" in err["error"] or "Not a directory" in err["error"]
    assert err["failures"] >= 3 and err["fix"]
    assert h["counters"]["archive_files"]["ship_failures"] >= 3
    # the destination comes back: the next round ships the backlog and health recovers
    dest.unlink()
    dest.mkdir()
    app.extensions["mailpulse"].writer().maintain()
    h = c.get("/healthz").get_json()
    assert h["status"] == "ok" and h["unshipped"]["files"] == 0 and "ship_error" not in h
    assert len(list((dest / "archive").rglob("*.json.gz"))) == 3


def test_unshipped_files_older_than_the_grace_period_are_degraded(tmp_path):
    spool = tmp_path / "spool"
    f = spool / "ses/2026/11/23/10/w-000001.json.gz"
    f.parent.mkdir(parents=True)
    f.write_bytes(gzip.compress(b"{}\n"))
    os.utime(f, (time.time() - 500, time.time() - 500))
    assert spool_status(spool)["oldest_age_seconds"] >= 499
    config = CollectorConfig(
        archive=str(tmp_path / "remote"),
        spool_dir=str(spool),
        cmc_api_key="k",
        maintain_interval=30,
        rotate_seconds=60,
    )
    h = create_app(config).test_client().get("/healthz").get_json()
    assert h["status"] == "degraded" and h["unshipped"]["files"] == 1


def test_maintenance_thread_publishes_on_time(tmp_path):
    """The app's own maintenance thread (real time): published within rotate_seconds."""
    config = CollectorConfig(
        archive=str(tmp_path / "a"), cmc_api_key="k", maintain_interval=30, rotate_seconds=1
    )
    app = create_app(config)
    c = app.test_client()
    try:
        t = time.monotonic()
        assert (
            c.post(
                "/webhooks/cmc?api_key=k", data=cmc_body(1), content_type="application/json"
            ).status_code
            == 200
        )
        while not visible(tmp_path / "a") and time.monotonic() - t < 5:
            time.sleep(0.02)
        took = time.monotonic() - t
    finally:
        app.extensions["mailpulse"].shutdown()
    assert visible(tmp_path / "a"), "not published within 5 s"
    assert took <= 1.0 + 0.5, took


@pytest.mark.slow
def test_serve_rotate_seconds_2_publishes_within_2_seconds(tmp_path):
    archive = tmp_path / "archive"
    server = Serve(str(archive), tmp_path / "serve.log", "--rotate-seconds", "2")
    delays = []
    try:
        for i in range(3):
            before = set(visible(archive))
            t = time.monotonic()
            assert server.post_cmc(cmc_body(i)) == 200
            while time.monotonic() - t < 6:
                new = set(visible(archive)) - before
                if new and any(cmc_body(i) in lines_in(archive, [n]) for n in new):
                    break
                time.sleep(0.02)
            delays.append(time.monotonic() - t)
            assert list(archive.rglob("*.json.gz")), server.log_text()[-2000:]
    finally:
        rc = server.stop()
    print(
        "\nserve --rotate-seconds 2: acknowledged -> published in "
        + ", ".join(f"{d:.2f}" for d in delays)
        + " s"
    )
    assert rc == 0
    assert max(delays) <= 2.0 + 0.3, delays
    assert sorted(lines_in(archive, visible(archive))) == sorted(cmc_body(i) for i in range(3))
