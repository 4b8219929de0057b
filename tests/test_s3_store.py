"""S3ObjectStore against a real SeaweedFS: errors, multipart, a store that stops and returns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hfpull.blobstore import s3
from hfpull.blobstore.objects import StoreUnavailable
from hfpull.blobstore.s3 import S3Config, S3ObjectStore
from hfpull.errors import AuthError, UsageError
from tests.s3_helpers import SeaweedFS

MiB = 1 << 20


def test_urls_parse_into_bucket_and_prefix_and_bad_ones_are_refused() -> None:
    assert S3Config.from_url("s3://models/mirror/eu") == S3Config("models", "mirror/eu/")
    assert S3Config.from_url("s3://models").prefix == ""
    config = S3Config.from_url("s3://models/", endpoint="http://u:p@minio:9000", region="eu")
    assert config.endpoint == "http://u:p@minio:9000" and config.region == "eu"
    assert "u:p" not in config.where and "minio:9000" in config.where
    for bad in ("http://models/x", "s3://", "s3://a/x", "s3://bad bucket/x", "s3://b@ucket/x",
                "s3://models/../etc", "s3://models/x?versionId=1"):  # fmt: skip
        with pytest.raises(UsageError):
            S3Config.from_url(bad)


def test_importing_the_s3_store_does_not_import_boto3() -> None:
    code = "import sys, hfpull.blobstore.s3; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_wrong_secret_is_a_clear_auth_error_without_the_secret(
    seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = seaweed.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    store = S3ObjectStore(S3Config(bucket, "", seaweed.endpoint, "us-east-1"))
    with pytest.raises(AuthError) as caught:
        store.check()
    assert bucket in str(caught.value) and "not-the-secret" not in str(caught.value)
    with pytest.raises(AuthError):
        store.put("x", b"y")


def test_a_missing_bucket_is_a_usage_error_naming_it(s3_objects: S3ObjectStore) -> None:
    config = S3Config("no-such-bucket-here", "", s3_objects.config.endpoint, "us-east-1")
    with pytest.raises(UsageError, match="no-such-bucket-here"):
        S3ObjectStore(config).check()


def test_a_large_file_goes_up_in_parts_and_reads_back_byte_exact(
    s3_objects: S3ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "MULTIPART_ABOVE", 8 * MiB)
    monkeypatch.setattr(s3, "PART_SIZE", 5 * MiB)
    data = os.urandom(20 * MiB + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    s3_objects.upload_file("blobs/ab/big", str(path), if_none_match=True)
    info = s3_objects.head("blobs/ab/big")
    assert info is not None and info.size == len(data) and info.etag.endswith('-5"')  # 5 parts
    for start, end in ((0, 1), (5 * MiB - 3, 5 * MiB + 3), (len(data) - 100, len(data))):
        assert b"".join(s3_objects.get_range("blobs/ab/big", start, end)) == data[start:end]
    assert list(s3_objects.list_multipart("blobs/")) == []  # nothing left half done
    assert [i.name for i in s3_objects.scan("blobs/")] == ["blobs/ab/big"]  # prefix stripped


def test_a_stopped_store_is_unavailable_within_seconds_and_works_once_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = SeaweedFS(tmp_path / "own")  # its own server: the session's keeps running
    server.start()
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = S3ObjectStore(S3Config(server.new_bucket(), "p/", server.endpoint, "us-east-1"))
        store.put("k", b"v")
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.head("k")
        took = time.monotonic() - started
        assert took < 15, f"a stopped store took {took:.1f} s to fail"
        assert server.secret_key not in str(caught.value)
        server.start()
        assert _eventually(lambda: store.get("k")) == (b"v", store.head("k").etag)  # type: ignore[union-attr]
    finally:
        server.stop()


def _eventually(fn: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
