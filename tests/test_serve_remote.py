"""``mailpulse serve --archive s3://... | gs://...`` against real servers (issue 11, item 1).

moto's S3 server and the GCS emulator come from tests/storage_servers.py (started once per
test run). A real ``serve`` subprocess (gunicorn) ships published files to them; /healthz
says ``degraded`` with the count and age of unshipped files and the fix when the bucket is
missing or the endpoint is down (a loopback TCP proxy that is taken down and brought back),
and ``ok`` again once the backlog has shipped.
"""

from __future__ import annotations

import gzip
import time
from urllib.parse import urlparse

import pytest
from serve_support import Serve, TcpProxy, cmc_body
from storage_servers import unique_name

pytestmark = pytest.mark.slow

FAST = ("--rotate-seconds", "1", "--maintain-interval", "1")


def objects(url: str, server) -> dict[str, bytes]:
    """Every object under a bucket URI -> its bytes (real clients)."""
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    if url.startswith("s3://"):
        s3 = server.client("s3")
        out = {}
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        return out
    client = server.client()
    return {b.name: b.download_as_bytes() for b in client.list_blobs(bucket)}


def shipped_lines(url: str, server) -> list[bytes]:
    lines = []
    for key, data in objects(url, server).items():
        assert key.endswith(".json.gz"), key
        lines += [ln for ln in gzip.decompress(data).split(b"\n") if ln]
    return lines


def wait_for(pred, timeout: float, what: str, server: Serve | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    log = server.log_text()[-3000:] if server else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_serve_ships_to_the_bucket(request, tmp_path, kind):
    bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    store = request.getfixturevalue("moto_server" if kind == "s3" else "gcs_server")
    archive = f"{bucket}/webhooks"
    server = Serve(
        archive,
        tmp_path / "serve.log",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--workers",
        "1",
        *FAST,
    )
    try:
        bodies = [cmc_body(i, kind) for i in range(5)]
        t = time.monotonic()
        assert [server.post_cmc(b) for b in bodies] == [200] * 5
        wait_for(
            lambda: sorted(shipped_lines(bucket, store)) == sorted(bodies),
            20,
            "the posts in the bucket",
            server,
        )
        took = time.monotonic() - t
        # the spool copy goes once the upload is confirmed
        health = wait_for(
            lambda: (h := server.get("/healthz"))["unshipped"]["files"] == 0 and h,
            10,
            "an empty spool",
            server,
        )
    finally:
        assert server.stop() == 0
    print(f"\nserve -> {kind}://: 5 posts acknowledged -> in the bucket after {took:.1f} s")
    keys = list(objects(bucket, store))
    assert all(urlparse(f"x://b/{k}").path.startswith("/webhooks/cmc/") for k in keys), keys
    assert health["status"] == "ok", health
    assert health["unshipped"]["files"] == 0
    assert health["counters"]["archive_files"]["shipped"] >= 1
    assert not list((tmp_path / "spool").rglob("*.json*"))


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_missing_bucket_is_degraded_then_recovers(request, tmp_path, kind):
    store = request.getfixturevalue("moto_server" if kind == "s3" else "gcs_server")
    request.getfixturevalue("aws_env" if kind == "s3" else "gcs_env")
    name = unique_name("missing")
    bucket = f"{kind}://{name}"
    server = Serve(
        bucket,
        tmp_path / "serve.log",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--workers",
        "1",
        *FAST,
    )
    try:
        assert server.post_cmc(cmc_body(1, "m")) == 200
        health = wait_for(
            lambda: (
                (h := server.get("/healthz"))["status"] == "degraded" and "ship_error" in h and h
            ),
            30,
            "degraded",
            server,
        )
        assert health["unshipped"]["files"] == 1
        assert health["unshipped"]["oldest_age_seconds"] >= 0
        err = health["ship_error"]
        assert name in err["fix"] and "does not exist" in err["fix"], err
        assert "does not exist" in server.log_text() and "create it" in server.log_text()
        # the operator creates the bucket: the backlog ships, health is ok again
        if kind == "s3":
            store.client("s3").create_bucket(Bucket=name)
        else:
            store.client().create_bucket(name)
        wait_for(
            lambda: (
                (h := server.get("/healthz"))["status"] == "ok" and h["unshipped"]["files"] == 0
            ),
            30,
            "ok again",
            server,
        )
        wait_for(
            lambda: shipped_lines(bucket, store) == [cmc_body(1, "m")], 10, "the object", server
        )
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_endpoint_down_is_degraded_then_recovers(request, tmp_path, kind):
    bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    store = request.getfixturevalue("moto_server" if kind == "s3" else "gcs_server")
    proxy = TcpProxy(urlparse(store.url).port).up()
    env = {"AWS_ENDPOINT_URL": proxy.url} if kind == "s3" else {"STORAGE_EMULATOR_HOST": proxy.url}
    server = Serve(
        bucket,
        tmp_path / "serve.log",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--workers",
        "1",
        *FAST,
        env=env,
    )
    try:
        assert server.post_cmc(cmc_body(0, "d")) == 200
        wait_for(
            lambda: shipped_lines(bucket, store) == [cmc_body(0, "d")], 20, "first ship", server
        )
        proxy.down()
        assert server.post_cmc(cmc_body(1, "d")) == 200  # still acknowledged: durable in the spool
        health = wait_for(
            lambda: (h := server.get("/healthz"))["status"] == "degraded" and h,
            30,
            "degraded",
            server,
        )
        assert health["unshipped"]["files"] >= 1
        assert health["unshipped"]["oldest_age_seconds"] is not None
        # Beam's S3 and the GCS client retry first (seconds to minutes): until they give up,
        # an unshipped file older than the grace period (2 x maintain + rotate) is degraded
        if "ship_error" in health:
            assert "endpoint cannot be reached" in health["ship_error"]["fix"], health
        proxy.up()
        want = sorted([cmc_body(0, "d"), cmc_body(1, "d")])
        wait_for(
            lambda: sorted(shipped_lines(bucket, store)) == want, 60, "both posts shipped", server
        )
        health = wait_for(
            lambda: (
                (h := server.get("/healthz"))["status"] == "ok"
                and h["unshipped"]["files"] == 0
                and h
            ),
            20,
            "ok again",
            server,
        )
        assert "ship_error" not in health
    finally:
        proxy.down()
        assert server.stop(timeout=150) == 0


def test_s3_flags_pass_through_to_beam(tmp_path, s3_bucket, moto_server, monkeypatch):
    """No AWS_ENDPOINT_URL: the endpoint comes from Beam's --s3_endpoint_url flag."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    server = Serve(
        s3_bucket,
        tmp_path / "serve.log",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--workers",
        "1",
        *FAST,
        "--s3_endpoint_url",
        moto_server.url,
        "--s3_region_name=us-east-1",
    )
    try:
        assert server.post_cmc(cmc_body(7, "flag")) == 200
        wait_for(
            lambda: shipped_lines(s3_bucket, moto_server) == [cmc_body(7, "flag")],
            20,
            "the post in the bucket",
            server,
        )
    finally:
        assert server.stop() == 0


def test_start_up_errors_name_the_fix(tmp_path, cli, monkeypatch):
    env = {"MAILPULSE_CMC_API_KEY": "k", "MAILPULSE_DATA_DIR": str(tmp_path)}
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    r = cli("serve", "--archive", "s3://some-bucket/x", "--port", "1", env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "AWS_ACCESS_KEY_ID" in r.stderr and "s3://some-bucket/x" in r.stderr
    r = cli(
        "serve", "--archive", str(tmp_path / "a"), "--spool-directory", "x", env=env, timeout=60
    )
    assert r.returncode == 2 and "did you mean --spool-dir" in r.stderr, r.stderr
    r = cli("serve", "--archive", str(tmp_path / "a"), "--rotate-seconds", "0", env=env, timeout=60)
    assert r.returncode == 2 and "--rotate-seconds" in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_ship_errors_from_real_clients_name_the_fix(tmp_path, request, kind):
    """The exceptions Beam's filesystems really raise, and what the log line says."""
    from pipelines import storage
    from pipelines.collector.archive import Shipper, ship_hint

    request.getfixturevalue("aws_env" if kind == "s3" else "gcs_env")
    f = tmp_path / "x.json.gz"
    f.write_bytes(gzip.compress(b"{}\n"))
    missing = f"{kind}://{unique_name('nope')}"
    storage.configure([missing])
    with pytest.raises(Exception) as info:
        Shipper(missing).ship(f, "ses/x.json.gz")
    assert "does not exist" in ship_hint(info.value, missing)
    if kind == "s3":  # a dead endpoint (the GCS client would retry it for 120 s)
        proxy = TcpProxy(1)  # never brought up: connection refused
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage.configure([missing])
        with pytest.raises(Exception) as info:
            Shipper(missing).ship(f, "ses/x.json.gz")
        assert "endpoint cannot be reached" in ship_hint(info.value, missing)
