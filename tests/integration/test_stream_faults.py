"""Transfers through a proxy that fails, throttles, resets and corrupts requests on purpose."""

from __future__ import annotations

import io
import os
import random

import pytest

from backup_pipelines.core.errors import IntegrityError, StorageError
from backup_pipelines.core.repository.s3 import (
    Download,
    MultipartUpload,
    RetryPolicy,
    S3Repository,
    get_stream,
    make_client,
    put_stream,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB


def our_retries_only(endpoint: str):
    """botocore retries off, so every injected fault reaches our per-part retry logic."""
    return make_client(endpoint_url=endpoint, botocore_max_attempts=1, max_pool_connections=8)


def patient() -> RetryPolicy:
    return RetryPolicy(max_attempts=12, base_delay=0.005, max_delay=0.05, rng=random.Random(3))


def in_progress(s3_server, bucket) -> list[str]:
    return [u["Key"] for u in s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def keys(s3_server, bucket) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_twenty_percent_failures_still_yield_the_exact_object(s3_server, s3_bucket, faulty_s3):
    faulty_s3.error_rate = 0.10  # 500 InternalError / 503 SlowDown
    faulty_s3.reset_rate = 0.10  # resets, before forwarding or mid-response after the server acted
    c = our_retries_only(faulty_s3.endpoint_url)
    rng = random.Random(5)
    data = os.urandom(5 * PART + 4321)
    view = memoryview(data)
    with MultipartUpload(c, s3_bucket, "obj", part_size=PART, concurrency=3, retry=patient()) as up:
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 2 * MiB)
            up.write(view[pos : pos + n])
            pos += n
        info = up.commit()
    assert info.parts == 6
    for rate in (0.0, float("inf")):  # one streaming GET, then ranged GETs
        out = bytearray()
        Download(
            c,
            s3_bucket,
            "obj",
            part_size=PART,
            concurrency=3,
            retry=patient(),
            verify=True,
            sequential_rate=rate,
        ).read_into(out.extend)
        assert out == data
    counts = faulty_s3.counts
    assert counts["errors"] + counts["resets_before"] + counts["resets_after"] >= 4, counts
    assert in_progress(s3_server, s3_bucket) == []


def test_repository_survives_faults(s3_bucket, faulty_s3):
    faulty_s3.error_rate = 0.2
    c = our_retries_only(faulty_s3.endpoint_url)
    repo = S3Repository(f"s3://{s3_bucket}/repo", client=c, part_size=PART, concurrency=2, retry=patient())
    data = os.urandom(2 * PART + 1)
    w = repo.open_writer("a/data")
    w.write(data)
    w.commit()
    for i in range(5):
        repo.put_bytes(f"a/small{i}", b"x" * i)
    out = bytearray()
    assert repo.read_into("a/data", out.extend) == len(data) and out == data
    assert [i.key for i in repo.list("a/")] == ["a/data"] + [f"a/small{i}" for i in range(5)]
    repo.delete([f"a/small{i}" for i in range(5)])
    assert repo.stat("a/small1") is None and repo.stat("a/data") is not None
    assert faulty_s3.counts["errors"] > 0


def test_corrupted_part_fails_the_commit_and_leaves_nothing(s3_server, s3_bucket, faulty_s3):
    # moto does not check the per-part CRC32 header (real S3 answers BadDigest and the part is
    # retried); it does compute the whole-object CRC from the bytes it got, which the commit checks.
    faulty_s3.corrupt = lambda req: req.is_upload_part and "partNumber=2" in req.target
    c = make_client(endpoint_url=faulty_s3.endpoint_url)
    up = MultipartUpload(c, s3_bucket, "obj", part_size=PART, concurrency=2)
    up.write(os.urandom(3 * PART))
    with pytest.raises(IntegrityError, match=r"arrived damaged.*CRC-32") as exc:
        up.commit()
    assert "deleted" in (exc.value.hint or "")
    assert faulty_s3.counts["corrupted"] == 1
    assert keys(s3_server, s3_bucket) == [] and in_progress(s3_server, s3_bucket) == []


def test_corrupted_single_put_is_retried(s3_server, s3_bucket, faulty_s3):
    damaged = []

    def once(req):
        if req.method == "PUT" and not damaged:
            damaged.append(req.target)
            return True
        return False

    faulty_s3.corrupt = once
    c = make_client(endpoint_url=faulty_s3.endpoint_url)
    data = os.urandom(100_000)
    with MultipartUpload(c, s3_bucket, "small", part_size=PART, retry=patient()) as up:
        up.write(data)
        up.commit()
    assert damaged and s3_server.client().get_object(Bucket=s3_bucket, Key="small")["Body"].read() == data

    faulty_s3.corrupt = lambda req: req.method == "PUT"
    up = MultipartUpload(c, s3_bucket, "always", part_size=PART, retry=RetryPolicy(max_attempts=2, base_delay=0.001))
    up.write(data)
    with pytest.raises(IntegrityError, match="stored corrupted"):
        up.commit()
    assert "always" not in keys(s3_server, s3_bucket)


def test_retry_budget_exhausted_aborts_the_upload(s3_server, s3_bucket, faulty_s3):
    faulty_s3.match = lambda req: req.is_upload_part
    faulty_s3.error_rate = 1.0
    c = our_retries_only(faulty_s3.endpoint_url)
    up = MultipartUpload(
        c,
        s3_bucket,
        "obj",
        part_size=PART,
        concurrency=2,
        retry=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01),
    )
    with pytest.raises(StorageError) as exc:  # raised by write() once a part is lost, or by commit()
        up.write(os.urandom(4 * PART))
        up.commit()
    err = exc.value
    assert "after 3 attempts" in err.message and f"s3://{s3_bucket}/obj" in err.message
    assert "SlowDown" in err.message or "InternalError" in err.message
    assert in_progress(s3_server, s3_bucket) == [] and keys(s3_server, s3_bucket) == []


def test_server_outage_then_restart(s3_server, s3_bucket):
    c = our_retries_only(s3_server.endpoint_url)
    repo = S3Repository(
        f"s3://{s3_bucket}", client=c, part_size=PART, retry=RetryPolicy(max_attempts=2, base_delay=0.001)
    )
    repo.put_bytes("kept", b"survives a restart")
    w = repo.open_writer("interrupted")
    w.write(os.urandom(PART + 1))  # the multipart upload exists now
    s3_server.stop()
    try:
        with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint|failed"):
            w.write(os.urandom(PART))
            w.commit()
        with pytest.raises(StorageError):
            repo.get_bytes("kept")
    finally:
        s3_server.start()
    # moto keeps its state across an in-process restart; the upload could not be aborted while
    # the server was down, so it is left for cleanup_incomplete.
    assert repo.get_bytes("kept") == b"survives a restart"
    from datetime import UTC, datetime

    assert repo.cleanup_incomplete("", datetime.now(UTC)) == ["interrupted"]
    assert in_progress(s3_server, s3_bucket) == []


def test_stream_put_get_through_faults(s3_bucket, faulty_s3):
    faulty_s3.reset_rate = 0.2
    c = our_retries_only(faulty_s3.endpoint_url)
    data = os.urandom(3 * PART + 1)
    put_stream(c, s3_bucket, "s", io.BytesIO(data), part_size=PART, concurrency=2, retry=patient())
    out = bytearray()
    result = get_stream(c, s3_bucket, "s", out.extend, part_size=PART, concurrency=2, retry=patient())
    assert out == data and result.verified_against == "expected"


def test_lost_responses_are_recovered(s3_server, s3_bucket, faulty_s3):
    """The server acted but the reply was cut: re-sent parts, a re-sent Complete and a resumed GET."""
    faulty_s3.reset_when = "after"
    faulty_s3.reset_rate = 1.0
    cut: set[str] = set()

    def first_of_each_kind(req):
        kind = (
            "part"
            if req.is_upload_part
            else "complete"
            if req.method == "POST" and "uploadId=" in req.target
            else "get"
            if req.method == "GET" and "/obj" in req.target
            else None
        )
        if kind is None or kind in cut:
            return False
        cut.add(kind)
        return True

    faulty_s3.match = first_of_each_kind
    c = our_retries_only(faulty_s3.endpoint_url)
    data = os.urandom(2 * PART + 10)
    with MultipartUpload(c, s3_bucket, "obj", part_size=PART, concurrency=2, retry=patient()) as up:
        up.write(data)
        up.commit()
    out = bytearray()
    Download(c, s3_bucket, "obj", part_size=PART, retry=patient(), verify=True).read_into(out.extend)
    assert out == data
    assert cut == {"part", "complete", "get"} and faulty_s3.counts["resets_after"] == 3


def test_listing_resumes_after_a_failed_page(s3_bucket, faulty_s3, monkeypatch):
    monkeypatch.setenv("MOTO_S3_DEFAULT_MAX_KEYS", "3")  # in-process moto: three keys per page
    c = our_retries_only(faulty_s3.endpoint_url)
    repo = S3Repository(f"s3://{s3_bucket}/l", client=c, retry=patient())
    names = [f"k{i:02}" for i in range(10)]
    for n in names:
        repo.put_bytes(n, b"1")
    listings: list[str] = []

    def is_listing(req) -> bool:
        if req.method == "GET" and "list-type=2" in req.target:
            listings.append(req.target)
            return True
        return False

    faulty_s3.match = is_listing
    faulty_s3.error_rate = 0.5
    assert [i.key for i in repo.list("")] == names
    assert faulty_s3.counts["errors"] > 0
    assert sum("continuation-token" in t for t in listings) >= 3, "four pages of three keys"


def _part_number(req) -> int | None:
    if not req.is_upload_part:
        return None
    return int(req.target.split("partNumber=")[1].split("&")[0])


def _cli_put(endpoint: str, url: str, data: bytes):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "BACKUP_PIPELINES_CONFIG"}
    opts = ["--endpoint-url", endpoint, "--region", "us-east-1", "--part-size", str(PART), "--concurrency", "3"]
    cmd = [sys.executable, "-m", "backup_pipelines.cli", "stream", "put", *opts, url]
    return subprocess.run(cmd, input=data, capture_output=True, timeout=300, env=env)


def test_a_storm_of_slowdowns_and_resets_on_the_defaults(s3_server, s3_bucket, faulty_s3):
    """`stream put`/`get` as shipped (one retry layer, the default budget) through 25% 503/500 and 10% resets."""
    import subprocess
    import sys

    faulty_s3.error_rate = 0.25
    faulty_s3.reset_rate = 0.10
    tries: dict[int, int] = {}
    match = faulty_s3.match

    def count(req) -> bool:
        n = _part_number(req)
        if n is not None:
            tries[n] = tries.get(n, 0) + 1
        return match(req)

    faulty_s3.match = count
    data = os.urandom(4 * PART + 999)
    put = _cli_put(faulty_s3.endpoint_url, f"s3://{s3_bucket}/storm", data)
    assert put.returncode == 0, put.stderr.decode()
    assert faulty_s3.counts["errors"] + faulty_s3.counts["resets_before"] + faulty_s3.counts["resets_after"] > 3
    assert max(tries.values()) <= RetryPolicy().max_attempts
    env = {k: v for k, v in os.environ.items() if k != "BACKUP_PIPELINES_CONFIG"}
    opts = ["--endpoint-url", faulty_s3.endpoint_url, "--region", "us-east-1"]
    got = subprocess.run(
        [sys.executable, "-m", "backup_pipelines.cli", "stream", "get", *opts, f"s3://{s3_bucket}/storm"],
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert got.returncode == 0 and got.stdout == data, got.stderr.decode()


def test_an_outage_outlasting_the_budget_fails_in_bounded_time(s3_server, s3_bucket, faulty_s3):
    """Everything answers 503 once the first part is sent: exit 6 within the documented bound, each
    part tried exactly max_attempts times (one layer: not botocore's 3 x ours), nothing listed;
    cleanup aborts the upload the failed run could not, and the next run is fine."""
    import time
    from datetime import UTC, datetime

    from backup_pipelines.core.errors import ExitCode

    tries: dict[int, int] = {}
    down = []

    def outage(req) -> bool:
        n = _part_number(req)
        if n is not None:
            tries[n] = tries.get(n, 0) + 1
            down.append(True)
        return bool(down)

    faulty_s3.match = outage
    faulty_s3.error_rate = 1.0
    data = os.urandom(4 * PART)
    t0 = time.monotonic()
    put = _cli_put(faulty_s3.endpoint_url, f"s3://{s3_bucket}/outage", data)
    elapsed = time.monotonic() - t0
    policy = RetryPolicy()
    assert put.returncode == ExitCode.STORAGE, put.stderr.decode()
    assert b"after 8 attempts" in put.stderr and b"Traceback" not in put.stderr
    # The part's budget, then a 3-try abort, plus process start and request time.
    assert elapsed < policy.worst_case_wait() + 2 * policy.max_delay + 15, elapsed
    assert max(tries.values()) == policy.max_attempts, tries
    assert keys(s3_server, s3_bucket) == []
    assert in_progress(s3_server, s3_bucket) == ["outage"]  # the abort could not get through either

    faulty_s3.error_rate = 0.0
    repo = S3Repository(f"s3://{s3_bucket}", endpoint_url=s3_server.endpoint_url)
    assert repo.cleanup_incomplete("", datetime.now(UTC)) == ["outage"]
    assert in_progress(s3_server, s3_bucket) == []
    again = _cli_put(faulty_s3.endpoint_url, f"s3://{s3_bucket}/outage", data)
    assert again.returncode == 0, again.stderr.decode()
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="outage")["Body"].read() == data
