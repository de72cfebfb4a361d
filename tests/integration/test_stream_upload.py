"""The streaming multipart uploader against a real S3 API (moto): sizes, write patterns, abort."""

from __future__ import annotations

import os
import random
import threading

import pytest

from backup_pipelines.core.errors import StorageError
from backup_pipelines.core.repository.s3 import Download, MultipartUpload, RetryPolicy, make_client
from backup_pipelines.core.repository.s3 import upload as upload_mod

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def client(s3_server):
    c = make_client(endpoint_url=s3_server.endpoint_url, max_pool_connections=12)
    yield c
    c.close()


def read_back(client, bucket, key, **kw) -> bytes:
    out = bytearray()
    Download(client, bucket, key, part_size=PART, concurrency=3, **kw).read_into(out.extend)
    return bytes(out)


def in_progress(client, bucket) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        (0, 0),
        (1, 0),
        (PART - 1, 0),
        (PART, 0),
        (PART + 1, 2),
        (3 * PART, 3),
        (3 * PART + 12345, 4),
    ],
)
def test_sizes_roundtrip_byte_exact(client, s3_bucket, size, parts):
    data = os.urandom(size)
    with MultipartUpload(client, s3_bucket, "obj", part_size=PART, concurrency=3) as up:
        assert up.write(data) == size
        info = up.commit()
    assert (info.size, info.parts, info.key) == (size, parts, "obj")
    head = client.head_object(Bucket=s3_bucket, Key="obj")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith(f"-{parts}") == (parts > 0), "small objects use a single PUT"
    assert read_back(client, s3_bucket, "obj", verify=True) == data
    assert in_progress(client, s3_bucket) == []


def test_many_parts_from_random_small_writes(client, s3_bucket):
    rng = random.Random(42)
    data = os.urandom(6 * PART + 777)
    view = memoryview(data)
    pos = 0
    with MultipartUpload(client, s3_bucket, "many", part_size=PART, concurrency=4) as up:
        while pos < len(data):
            n = rng.choice([1, 7, 100, 4096, 65536, 300_000, 1_500_000])
            chunk = view[pos : pos + n]
            # Mix input types: bytes, bytearray (reused by the caller afterwards) and memoryview.
            kind = rng.randrange(3)
            if kind == 0:
                up.write(bytes(chunk))
            elif kind == 1:
                scratch = bytearray(chunk)
                up.write(scratch)
                scratch[:] = b"\0" * len(scratch)  # the writer must have copied already
            else:
                up.write(chunk)
            pos += len(chunk)
        info = up.commit()
    assert info.parts == 7 and info.size == len(data)
    got = read_back(client, s3_bucket, "many", verify=True)
    assert got == data


def test_write_from_reads_straight_into_part_buffers(client, s3_bucket, tmp_path):
    data = os.urandom(2 * PART + 99)
    src = tmp_path / "src"
    src.write_bytes(data)
    with open(src, "rb", buffering=0) as f, MultipartUpload(client, s3_bucket, "file", part_size=PART) as up:
        assert up.write_from(f.readinto) == len(data)
        up.commit()
    assert read_back(client, s3_bucket, "file") == data


def test_parts_upload_in_parallel_but_within_the_budget(s3_server, s3_bucket, faulty_s3):
    faulty_s3.match = lambda req: req.is_upload_part
    faulty_s3.delay = 0.15
    c = make_client(endpoint_url=faulty_s3.endpoint_url, max_pool_connections=8)
    data = os.urandom(8 * PART + 1)
    with MultipartUpload(c, s3_bucket, "budget", part_size=PART, concurrency=3) as up:
        for i in range(0, len(data), MiB):
            up.write(data[i : i + MiB])
            # (concurrency + 1) part buffers at most: 3 in flight, 1 filling.
            assert up.buffers.allocated <= 4 * PART
        up.commit()
    assert faulty_s3.max_inflight == 3, "three parts in flight at once, never more"
    assert read_back(c, s3_bucket, "budget") == data


def test_part_size_grows_after_the_flat_parts(client, s3_bucket, monkeypatch):
    monkeypatch.setattr(upload_mod, "FLAT_PARTS", 2)
    sizer = upload_mod.PartSizer(PART)
    assert sizer.step > 0
    expected = [sizer.size(n) for n in (1, 2, 3, 4)]
    assert expected[0] == expected[1] < expected[2] <= expected[3]
    data = os.urandom(sum(expected) + 10)
    up = MultipartUpload(client, s3_bucket, "grow", part_size=PART, concurrency=2)
    for i in range(0, len(data), 3 * MiB):
        up.write(data[i : i + 3 * MiB])
    upload_id = up._upload_id
    up.commit()
    assert up.info is not None and up.info.parts == 5
    # Bytes, not parts, are bounded: grown parts larger than the budget go one at a time.
    assert up.buffers.budget == 3 * PART < expected[2]
    assert up.buffers.peak <= max(expected)
    assert read_back(client, s3_bucket, "grow") == data
    # The parts S3 got (ListParts is gone after completion, so check the object's part sizes).
    sizes = [client.head_object(Bucket=s3_bucket, Key="grow", PartNumber=n)["ContentLength"] for n in (1, 2, 3, 4)]
    assert sizes == expected, upload_id


def test_abort_leaves_no_object_and_no_upload(client, s3_bucket):
    up = MultipartUpload(client, s3_bucket, "aborted", part_size=PART, concurrency=2)
    up.write(os.urandom(3 * PART))
    assert in_progress(client, s3_bucket) == ["aborted"]
    up.abort()
    up.abort()  # idempotent
    assert in_progress(client, s3_bucket) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    with pytest.raises(StorageError, match="aborted"):
        up.write(b"x")
    with pytest.raises(StorageError, match="aborted"):
        up.commit()


def test_exception_inside_with_aborts(client, s3_bucket):
    with (
        pytest.raises(RuntimeError, match="producer died"),
        MultipartUpload(client, s3_bucket, "crashed", part_size=PART) as up,
    ):
        up.write(os.urandom(2 * PART + 5))
        raise RuntimeError("producer died")
    assert in_progress(client, s3_bucket) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_abort_from_another_thread_unblocks_a_waiting_writer(s3_bucket, faulty_s3):
    faulty_s3.match = lambda req: req.is_upload_part
    faulty_s3.delay = 0.5
    c = make_client(endpoint_url=faulty_s3.endpoint_url)
    up = MultipartUpload(c, s3_bucket, "blocked", part_size=PART, concurrency=1)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(20):
                up.write(os.urandom(PART))
        except BaseException as err:
            errors.append(err)

    t = threading.Thread(target=writer)
    t.start()
    threading.Event().wait(0.3)
    up.abort()  # e.g. the producer process died and a supervisor gives up
    t.join(10)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], StorageError)
    assert in_progress(c, s3_bucket) == []
    assert c.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_commit_twice_is_refused(client, s3_bucket):
    up = MultipartUpload(client, s3_bucket, "once", part_size=PART)
    up.write(b"abc")
    up.commit()
    with pytest.raises(StorageError, match="committed"):
        up.commit()
    up.abort()  # a no-op after commit: the object stays
    assert client.get_object(Bucket=s3_bucket, Key="once")["Body"].read() == b"abc"


def test_missing_bucket_is_not_found(client):
    from backup_pipelines.core.errors import NotFoundError

    for size in (10, PART + 1):  # the single PUT and the multipart path
        up = MultipartUpload(client, "no-such-bucket-here", "k", part_size=PART, retry=FAST_RETRY)
        with pytest.raises(NotFoundError, match="bucket no-such-bucket-here does not exist") as exc:
            up.write(b"x" * size)
            up.commit()
        assert exc.value.hint and "create the bucket" in exc.value.hint


def test_more_than_the_part_limit_is_refused(client, s3_bucket, monkeypatch):
    monkeypatch.setattr(upload_mod, "MAX_PARTS", 2)
    up = MultipartUpload(client, s3_bucket, "huge", part_size=PART)
    up.write(b"x" * 2 * PART)  # exactly two parts: fine so far
    with pytest.raises(StorageError, match="limit of 2 parts"):
        up.write(b"x")
    assert in_progress(client, s3_bucket) == []


def test_write_accepts_any_buffer_type(client, s3_bucket):
    import array

    ints = array.array("i", range(1000))
    with MultipartUpload(client, s3_bucket, "typed", part_size=PART) as up:
        up.write(ints)
        up.write(memoryview(ints)[10:20])
        up.commit()
    assert read_back(client, s3_bucket, "typed") == ints.tobytes() + ints[10:20].tobytes()
