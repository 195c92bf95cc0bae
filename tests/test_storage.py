"""pipelines.storage against real servers: moto (S3) and the GCS emulator (gs://)."""

from __future__ import annotations

import gzip

import pytest
from storage_servers import upload_tree

from pipelines import storage


def _list_and_read(root: str):
    from apache_beam.io.filesystems import FileSystems

    found = FileSystems.match([root + "/a/*/*"])[0].metadata_list
    out = {}
    for m in found:
        with FileSystems.open(m.path, compression_type="uncompressed") as fh:
            out[m.path[len(root) + 1 :]] = (m.size_in_bytes, fh.read())
    return out


@pytest.mark.parametrize("bucket_fixture", ["s3_bucket", "gcs_bucket"])
def test_configured_filesystems_list_and_read_a_real_bucket(request, tmp_path, bucket_fixture):
    bucket = request.getfixturevalue(bucket_fixture)
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "x" / "one.json").write_bytes(b'{"n": 1}\n')
    (tmp_path / "a" / "x" / "two.json.gz").write_bytes(gzip.compress(b'{"n": 2}\n'))
    upload_tree(tmp_path, bucket + "/pre")
    storage.configure([bucket])
    got = _list_and_read(bucket + "/pre")
    assert got == {
        "a/x/one.json": (9, b'{"n": 1}\n'),
        "a/x/two.json.gz": (
            len(gzip.compress(b'{"n": 2}\n')),
            (tmp_path / "a/x/two.json.gz").read_bytes(),
        ),
    }


def test_s3_without_credentials_names_the_fix(monkeypatch, tmp_path):
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(storage.StorageError, match="AWS_ACCESS_KEY_ID"):
        storage.configure(["s3://bucket/prefix"])


def test_s3_flags_count_as_credentials(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    opts = storage.configure(
        ["s3://bucket/prefix"], ["--s3_access_key_id", "k", "--s3_secret_access_key", "s"]
    )
    from apache_beam.options.pipeline_options import S3Options

    assert opts.view_as(S3Options).s3_access_key_id == "k"


def test_gcs_without_credentials_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no metadata server here
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(storage.StorageError, match="application-default login"):
        storage.configure(["gs://bucket/prefix"])


def test_unknown_scheme_is_refused():
    with pytest.raises(storage.StorageError, match="unsupported storage scheme"):
        storage.configure(["ftp://host/x"])
