"""`mailpulse load` from real object storage: S3 (moto server) and GCS (the emulator),
in the mailpulse layout and in Kinesis Firehose's own key layout.

A load from a bucket must equal the same archive loaded from a local folder, event for
event; a wrong prefix or layout fails loudly (exit 4) and says where it looked.
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import TEST_HASH_KEY, run_cli
from storage_servers import upload_tree

DAY = date(2026, 11, 20)
pytestmark = pytest.mark.slow

COLUMNS = (
    "event_id, provider, event_type, provider_event_type, bounce_class, event_ts, "
    "event_date, message_id, email_hash, recipient_domain, categories, reason, "
    "smtp_status, url, attempt"
)


def events_of(wh_uri: str) -> list[dict]:
    from pipelines.warehouse import open_warehouse

    return (
        open_warehouse(wh_uri)
        .query(
            f"SELECT {COLUMNS} FROM events WHERE event_date BETWEEN @a AND @b ORDER BY event_id",
            {"a": date(2026, 11, 1), "b": date(2026, 12, 31)},
        )
        .to_pylist()
    )


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory):
    """A small synthetic day of all three providers (with retries, late events, junk)."""
    root = tmp_path_factory.mktemp("sample") / "archive"
    r = run_cli(
        "synth",
        "--out",
        root,
        "--date",
        DAY.isoformat(),
        "--messages",
        "300",
        "--seed",
        "7",
        env={"MAILPULSE_HASH_KEY": TEST_HASH_KEY},
    )
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="module")
def local_events(sample_archive, tmp_path_factory):
    wh = f"duckdb://{tmp_path_factory.mktemp('local')}/w.duckdb"
    r = run_cli(
        "load",
        "--archive",
        sample_archive,
        "--date",
        DAY.isoformat(),
        "--warehouse",
        wh,
        "--json",
        env={"MAILPULSE_HASH_KEY": TEST_HASH_KEY},
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return doc, events_of(wh)


@pytest.mark.parametrize("bucket_fixture", ["s3_bucket", "gcs_bucket"])
def test_load_from_a_bucket_equals_the_local_load(
    request, bucket_fixture, sample_archive, local_events, tmp_path
):
    bucket = request.getfixturevalue(bucket_fixture)
    upload_tree(sample_archive, bucket + "/events/archive")
    wh = f"duckdb://{tmp_path}/w.duckdb"
    r = run_cli(
        "load",
        "--archive",
        bucket + "/events/archive",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        wh,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    local_doc, local = local_events
    for k in (
        "files_read",
        "records_read",
        "events_loaded",
        "duplicates_in_batch",
        "dead_letters",
        "records_without_event",
    ):
        assert doc[k] == local_doc[k], k
    assert doc["files_read"] > 10 and doc["adds_up"]
    assert events_of(wh) == local, _diff(events_of(wh), local)
    # the manifest holds the bucket's objects: a rerun reads none of them
    r2 = run_cli(
        "load",
        "--archive",
        bucket + "/events/archive",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        wh,
        "--json",
    )
    doc2 = json.loads(r2.stdout.strip().splitlines()[-1])
    assert (doc2["files_read"], doc2["files_skipped"]) == (0, doc["files_read"])


def test_wrong_prefix_fails_and_names_where_it_looked(s3_bucket, sample_archive, tmp_path):
    upload_tree(sample_archive, s3_bucket + "/real")
    r = run_cli(
        "load",
        "--archive",
        s3_bucket + "/typo",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        f"duckdb://{tmp_path}/w.duckdb",
    )
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert f"{s3_bucket}/typo/sendgrid/2026/11/20/*/*" in r.stderr
    assert "No objects at all there" in r.stderr
    from pipelines.warehouse import open_warehouse

    assert open_warehouse(f"duckdb://{tmp_path}/w.duckdb").query(
        "SELECT status, files_read FROM loads"
    ).to_pylist() == [{"status": "empty", "files_read": 0}]


def test_missing_aws_credentials_fail_at_start_naming_the_fix(tmp_path, monkeypatch):
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    r = run_cli(
        "load",
        "--archive",
        "s3://some-bucket/x",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        f"duckdb://{tmp_path}/w.duckdb",
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert "AWS_ACCESS_KEY_ID" in r.stderr and "Traceback" not in r.stderr
    # a profile that does not exist is named too
    r = run_cli(
        "load",
        "--archive",
        "s3://some-bucket/x",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        f"duckdb://{tmp_path}/w.duckdb",
        env={**env, "AWS_PROFILE": "no-such-profile"},
    )
    assert r.returncode == 2 and "no-such-profile" in r.stderr and "Traceback" not in r.stderr


# -- Kinesis Data Firehose's own layout -----------------------------------------------------


def firehose_key(prefix: str, at: datetime, stream: str = "ses-events") -> str:
    return f"{prefix}/{at:%Y/%m/%d/%H}/{stream}-1-{at:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"


def ses_records(sample_archive: Path) -> list[bytes]:
    """SES event-publishing records (bare JSON, as Firehose delivers them) from synth."""
    out = []
    for path in sorted((sample_archive / "ses").rglob("*.json*")):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        for line in data.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "Message" in doc:  # SNS envelope -> the SES record
                try:
                    doc = json.loads(doc["Message"])
                except ValueError:
                    continue
            if isinstance(doc, dict) and "eventType" in doc and "mail" in doc:
                out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def test_firehose_layout_from_s3(moto_server, s3_bucket, sample_archive, tmp_path):
    records = ses_records(sample_archive)
    assert len(records) > 100
    s3 = moto_server.client("s3")
    bucket = s3_bucket[len("s3://") :]
    at = datetime(2026, 11, 20, 10, 15, 3, tzinfo=timezone.utc)
    quarter = len(records) // 4
    parts = [
        records[:quarter],
        records[quarter : 2 * quarter],
        records[2 * quarter : 3 * quarter],
        records[3 * quarter :],
    ]
    bodies = [
        b"".join(r + b"\n" for r in parts[0]),  # SES: newline-terminated
        gzip.compress(b"".join(r + b"\n" for r in parts[1])),  # GZIP, no extension
        b"".join(parts[2]),  # back to back, no delimiter
    ]
    keys = [firehose_key("firehose", at.replace(minute=m)) for m in (15, 30, 45)]
    gz_key = firehose_key("firehose", at.replace(hour=11)) + ".gz"  # GZIP with .gz
    for key, body in [*zip(keys, bodies), (gz_key, gzip.compress(b"\n".join(parts[3])))]:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    # noise the layout must not read: Firehose's error output and an unrelated object
    s3.put_object(Bucket=bucket, Key="firehose/2026/11/20/10/notes.txt", Body=b"hello")

    wh = f"duckdb://{tmp_path}/w.duckdb"
    src = f"ses={s3_bucket}/firehose?layout=firehose"
    r = run_cli("load", "--source", src, "--date", DAY.isoformat(), "--warehouse", wh, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["files_read"] == 4
    assert doc["dead_letters"] == 0 and doc["adds_up"]
    # the same records as one local NDJSON file in the hourly layout load the same
    local = tmp_path / "local" / "ses" / "2026" / "11" / "20" / "10" / "all.json"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"".join(r + b"\n" for r in records))
    wl = f"duckdb://{tmp_path}/local.duckdb"
    r = run_cli(
        "load",
        "--archive",
        tmp_path / "local",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        wl,
        "--json",
    )
    ref = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("records_read", "events_loaded", "duplicates_in_batch", "records_without_event"):
        assert doc[k] == ref[k], k
    assert ref["events_loaded"] > 100
    assert events_of(wh) == events_of(wl)

    # the same bucket read with the hourly layout finds nothing and says why
    r = run_cli(
        "load",
        "--source",
        f"ses={s3_bucket}/firehose",
        "--date",
        DAY.isoformat(),
        "--warehouse",
        f"duckdb://{tmp_path}/w2.duckdb",
    )
    assert r.returncode == 4
    assert "by extension" in r.stderr and "layout=firehose" in r.stderr


def _diff(a, b):
    da = {r["event_id"]: r for r in a}
    db = {r["event_id"]: r for r in b}
    out = []
    for k in sorted(set(da) | set(db)):
        if da.get(k) != db.get(k):
            ra, rb = da.get(k) or {}, db.get(k) or {}
            out.append(
                (
                    k,
                    {
                        c: (ra.get(c), rb.get(c))
                        for c in set(ra) | set(rb)
                        if ra.get(c) != rb.get(c)
                    },
                )
            )
    return out[:5]
