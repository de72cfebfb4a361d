"""`backup-pipelines stream put/get` as a pipeline tool: exact round trips, failed producers, tampering."""

from __future__ import annotations

import os

import boto3
import pytest

from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.errors import ExitCode
from tests.fixtures.cli import stream
from tests.fixtures.mariadb import write_secret

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, 5 * MiB + 1, 17 * MiB + 12345])
def test_put_get_round_trip(s3_server, s3_bucket, size):
    data = os.urandom(size)
    url = f"s3://{s3_bucket}/raw/{size}.bin"
    put = stream(s3_server.endpoint_url, "put", url, data=data)
    assert put.returncode == 0, put.stderr.decode()
    got = stream(s3_server.endpoint_url, "get", url)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == data and b"warning" not in got.stderr


def test_compressed_and_encrypted_round_trip(s3_server, s3_bucket, tmp_path):
    key = write_secret(tmp_path / "k", generate_key_text())
    data = os.urandom(3 * MiB) + bytes(9 * MiB)
    url = f"s3://{s3_bucket}/enc/x"
    flags = ["--compression", "zstd", "--encrypt", "--key-file", str(key)]
    assert stream(s3_server.endpoint_url, "put", url, *flags, data=data).returncode == 0
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    stored = s3.get_object(Bucket=s3_bucket, Key="enc/x")["Body"].read()
    assert stored.startswith(b"BPENC\x01") and len(stored) < 5 * MiB and bytes(64) not in stored
    got = stream(s3_server.endpoint_url, "get", url, *flags)
    assert got.returncode == 0 and got.stdout == data
    other = write_secret(tmp_path / "k2", generate_key_text())
    bad = stream(s3_server.endpoint_url, "get", url, "--compression", "zstd", "--encrypt", "--key-file", str(other))
    assert bad.returncode == ExitCode.INTEGRITY and b"encrypted with key id" in bad.stderr


def test_a_killed_producer_leaves_no_object(s3_server, s3_bucket):
    url = f"s3://{s3_bucket}/killed"
    res = stream(s3_server.endpoint_url, "put", url, "--", "sh", "-c", "head -c 12000000 /dev/urandom; kill -9 $$")
    assert res.returncode == ExitCode.TOOL_FAILED, res.stderr.decode()
    assert b"killed by signal 9" in res.stderr and b"no object was written" in res.stderr
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    assert "Contents" not in s3.list_objects_v2(Bucket=s3_bucket)
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    ok = stream(s3_server.endpoint_url, "put", url, "--", "sh", "-c", "head -c 7000000 /dev/zero")
    assert ok.returncode == 0
    assert s3.head_object(Bucket=s3_bucket, Key="killed")["ContentLength"] == 7000000


def test_get_of_a_tampered_object_fails_after_writing(s3_server, s3_bucket):
    url = f"s3://{s3_bucket}/t"
    data = os.urandom(6 * MiB)
    assert stream(s3_server.endpoint_url, "put", url, data=data).returncode == 0
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    tampered = bytearray(data)
    tampered[4 * MiB] ^= 0xFF
    s3.put_object(Bucket=s3_bucket, Key="t", Body=bytes(tampered))
    res = stream(s3_server.endpoint_url, "get", url)
    assert res.returncode == ExitCode.INTEGRITY
    assert b"must not be trusted" in res.stderr
