"""The same S3 behaviour on two implementations written by different people: moto and s3rver.

s3rver returns no ChecksumCRC32 and answers ListMultipartUploads with 501 NotImplemented, so
it exercises the paths that moto (which echoes whatever CRC the client claims) never takes:
per-part MD5 verification and housekeeping the server does not offer.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from backup_pipelines.core.errors import ExitCode
from backup_pipelines.core.repository.s3 import S3Repository
from backup_pipelines.core.repository.s3 import driver as driver_mod
from tests.fixtures.cli import stream
from tests.fixtures.s3 import FaultProxy, S3Server, implementation

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def keys(server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.parametrize("size", [1, 5 * MiB + 1, 17 * MiB + 12345])
def test_stream_put_get_round_trip(any_s3, any_bucket, size):
    data = os.urandom(size)
    url = f"s3://{any_bucket}/raw/{size}.bin"
    put = stream(any_s3.endpoint_url, "put", url, data=data)
    assert put.returncode == 0, put.stderr.decode()
    got = stream(any_s3.endpoint_url, "get", url)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == data and b"warning" not in got.stderr.lower()


def test_a_bit_flipped_in_transit_never_exits_zero_unverified(any_s3, any_bucket, faulty_any_s3: FaultProxy):
    """One byte of part 2 flipped on its way (a loopback proxy): the upload retries or fails, never
    stores it silently. With per-part checks (s3rver: the part ETag is the MD5 of what it stored)
    the part is re-sent and the object is exact; where only the completed object's CRC tells
    (moto), the commit fails with exit 4 and nothing is listed."""
    damaged: list[str] = []

    def once(req) -> bool:
        if req.is_upload_part and "partNumber=2" in req.target and not damaged:
            damaged.append(req.target)
            return True
        return False

    faulty_any_s3.corrupt = once
    data = os.urandom(13 * MiB)
    url = f"s3://{any_bucket}/flipped"
    put = stream(faulty_any_s3.endpoint_url, "put", url, data=data)
    assert damaged, "the proxy flipped a byte"
    if put.returncode == 0:
        got = stream(any_s3.endpoint_url, "get", url)
        assert got.returncode == 0 and got.stdout == data, got.stderr.decode()
    else:
        assert put.returncode == ExitCode.INTEGRITY, put.stderr.decode()
        assert b"damaged" in put.stderr and "flipped" not in keys(any_s3, any_bucket)
    expected = 0 if implementation(any_s3) == "s3rver" else ExitCode.INTEGRITY
    assert put.returncode == expected, put.stderr.decode()

    # Flipped on every attempt: exit 4 (integrity), and no object under the key.
    faulty_any_s3.corrupt = lambda req: req.is_upload_part and "partNumber=2" in req.target
    put = stream(faulty_any_s3.endpoint_url, "put", f"s3://{any_bucket}/always", data=data)
    assert put.returncode == ExitCode.INTEGRITY, put.stderr.decode()
    assert "always" not in keys(any_s3, any_bucket)
    assert b"Traceback" not in put.stderr


def test_housekeeping_the_server_lacks_is_skipped_with_one_warning(s3rver_server, s3rver_bucket, caplog):
    """s3rver answers ListMultipartUploads with 501: cleanup must not fail, and says what to do once."""
    driver_mod._WARNED_NO_UPLOAD_LISTING.clear()
    repo = S3Repository(f"s3://{s3rver_bucket}/r", endpoint_url=s3rver_server.endpoint_url)
    with caplog.at_level(logging.WARNING, logger="backup_pipelines.core.repository.s3.driver"):
        assert repo.cleanup_incomplete("", datetime.now(UTC) - timedelta(hours=1)) == []
        assert repo.cleanup_incomplete("", datetime.now(UTC)) == []
        other = S3Repository(f"s3://{s3rver_bucket}/r", endpoint_url=s3rver_server.endpoint_url)
        assert other.cleanup_incomplete("", datetime.now(UTC)) == []
    warnings = [r.getMessage() for r in caplog.records if "ListMultipartUploads" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "lifecycle rule" in warnings[0] and "not a transient fault" in warnings[0]
    assert "health" not in warnings[0]


def test_cleanup_on_a_server_without_upload_listing_exits_zero(
    s3rver_server, s3rver_bucket, make_config, tmp_path, caplog, capsys
):
    """`cleanup` (and the housekeeping before every backup) on s3rver: exit 0, one warning, no 'health' hint."""
    from backup_pipelines.cli import main

    driver_mod._WARNED_NO_UPLOAD_LISTING.clear()
    make_config(f"s3://{s3rver_bucket}/mysql", s3_endpoint=s3rver_server.endpoint_url)
    with caplog.at_level(logging.WARNING):
        rc = main(["-c", str(tmp_path / "config.yaml"), "cleanup", "--host", "db1", "--grace-hours", "0"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "removed 0 orphaned object(s)" in out.out
    text = caplog.text + out.err
    assert text.count("does not implement ListMultipartUploads") == 1
    assert "check the S3 endpoint's health" not in text
