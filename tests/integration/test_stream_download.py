"""The downloader against moto: both strategies, readers, early exits, and checksum verification."""

from __future__ import annotations

import io
import os
import threading

import pytest

from backup_pipelines.core.errors import IntegrityError, NotFoundError
from backup_pipelines.core.repository.s3 import (
    Download,
    MultipartUpload,
    ObjectReader,
    UploadInfo,
    get_stream,
    make_client,
    put_stream,
    read_checksum_record,
    sidecar_key,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB
SEQUENTIAL = 0.0  # never switch to ranged GETs
PARALLEL = float("inf")  # always switch after the first part


@pytest.fixture(scope="module")
def client(s3_server):
    c = make_client(endpoint_url=s3_server.endpoint_url, max_pool_connections=12)
    yield c
    c.close()


def upload(client, bucket, key, data, checksum_type: str = "COMPOSITE") -> UploadInfo:
    with MultipartUpload(client, bucket, key, part_size=PART, concurrency=3, checksum_type=checksum_type) as up:
        up.write(data)
        return up.commit()


@pytest.mark.parametrize("size", [0, 1, PART, PART + 1, 2 * PART + 1, 4 * PART + 3 * MiB + 17])
@pytest.mark.parametrize(
    ("rate", "checksum_type"),
    [(SEQUENTIAL, "COMPOSITE"), (PARALLEL, "FULL_OBJECT")],
    ids=["sequential-composite", "parallel-full"],
)
def test_roundtrip_in_order(client, s3_bucket, size, rate, checksum_type):
    data = os.urandom(size)
    info = upload(client, s3_bucket, "obj", data, checksum_type)
    out = bytearray()
    dl = Download(
        client,
        s3_bucket,
        "obj",
        part_size=PART,
        concurrency=3,
        verify=True,
        sequential_rate=rate,
        chunk_size=MiB,
    )
    result = dl.read_into(out.extend)
    assert out == data
    assert result.size == size
    assert result.crc32 == info.crc32, "the CRC derived from the part CRCs is the CRC of the stream"
    # S3 keeps a whole-object CRC for single PUTs and FULL_OBJECT uploads; a COMPOSITE one is a
    # CRC of part CRCs that a streaming read cannot check (get_stream uses its sidecar instead).
    if info.parts == 0 or checksum_type == "FULL_OBJECT":
        assert result.verified_against == "s3-checksum" and result.stored_crc32 == info.crc32
    else:
        assert result.verified_against is None and result.stored_crc32 is None
    went_parallel = dl.parallel_from is not None
    assert went_parallel == (rate == PARALLEL and size > 2 * PART)
    if went_parallel:
        assert dl.parallel_from == 2 * PART  # the first GET finished the part after the decision point


def test_object_reader_reads_in_any_sizes(client, s3_bucket):
    data = os.urandom(3 * PART + 5)
    upload(client, s3_bucket, "obj", data)
    dl = Download(client, s3_bucket, "obj", part_size=PART, concurrency=2, sequential_rate=PARALLEL)
    with ObjectReader(dl) as reader:
        got = bytearray()
        sizes = [1, 1000, 3 * MiB + 1, 65536, 7 * MiB]
        i = 0
        while chunk := reader.read(sizes[i % len(sizes)]):
            got += chunk
            i += 1
    assert got == data


def test_stopping_early_releases_workers(client, s3_bucket):
    upload(client, s3_bucket, "obj", os.urandom(5 * PART))

    def workers() -> list[threading.Thread]:  # moto's own request threads live in this process too
        return [t for t in threading.enumerate() if t.name.startswith("s3-get")]

    dl = Download(client, s3_bucket, "obj", part_size=PART, concurrency=3, sequential_rate=PARALLEL, chunk_size=MiB)
    chunks = dl.chunks()
    total = 0
    for view in chunks:
        total += len(view)
        if total >= PART + MiB:  # the ranged GETs have started by now
            break
    assert workers()
    chunks.close()
    assert workers() == []

    seen = 0

    def failing_sink(view: memoryview) -> None:
        nonlocal seen
        seen += len(view)
        if seen > 3 * PART:  # well into the ranged GETs
            raise OSError("broken pipe")

    with pytest.raises(OSError, match="broken pipe"):
        Download(client, s3_bucket, "obj", part_size=PART, concurrency=3, sequential_rate=PARALLEL).read_into(
            failing_sink
        )
    assert workers() == []


def test_missing_object_and_bucket(client, s3_bucket):
    with pytest.raises(NotFoundError, match="does not exist"):
        Download(client, s3_bucket, "nope").read_into(lambda v: None)
    with pytest.raises(NotFoundError, match="bucket no-such-bucket-x"):
        Download(client, "no-such-bucket-x", "nope").read_into(lambda v: None)


def test_object_replaced_during_a_read_is_detected(client, s3_bucket):
    upload(client, s3_bucket, "obj", os.urandom(4 * PART))
    replaced = False

    def sink(view: memoryview) -> None:
        nonlocal replaced
        if not replaced:  # another writer replaces the object while we read it
            client.put_object(Bucket=s3_bucket, Key="obj", Body=b"new version")
            replaced = True

    with pytest.raises(IntegrityError, match="changed while it was being read"):
        Download(client, s3_bucket, "obj", part_size=PART, concurrency=2, sequential_rate=PARALLEL).read_into(sink)


def test_put_and_get_stream_verify_against_the_sidecar(client, s3_bucket, tmp_path):
    data = os.urandom(2 * PART + 3)
    src = tmp_path / "in"
    src.write_bytes(data)
    with open(src, "rb") as f:
        info = put_stream(client, s3_bucket, "stream", f, part_size=PART, concurrency=2)
    record = read_checksum_record(client, s3_bucket, "stream")
    assert record is not None and (record.size, record.crc32, record.etag) == (
        info.size,
        info.crc32,
        info.etag,
    )
    out = bytearray()
    result = get_stream(client, s3_bucket, "stream", out.extend, part_size=PART)
    assert out == data and result.verified_against == "expected"


@pytest.mark.parametrize("same_size", [True, False])
def test_tampered_object_is_detected(client, s3_server, s3_bucket, same_size):
    data = os.urandom(PART + 1000)
    put_stream(client, s3_bucket, "stream", io.BytesIO(data), part_size=PART)
    # Someone overwrites the object with a plain boto3 PutObject: the SDK sends, and S3 stores, a
    # fresh CRC32 that *matches* the new bytes, so only the sidecar written at upload time can tell.
    forged = bytearray(data) if same_size else bytearray(data[:-1])
    forged[12345] ^= 0x01
    s3_server.client().put_object(Bucket=s3_bucket, Key="stream", Body=bytes(forged))
    with pytest.raises(IntegrityError, match=r"checksum mismatch|bytes,") as exc:
        get_stream(client, s3_bucket, "stream", lambda v: None, part_size=PART)
    assert exc.value.hint
    # Without the sidecar the S3 checksum is all there is, and it matches the forged bytes.
    client.delete_object(Bucket=s3_bucket, Key=sidecar_key("stream"))
    result = get_stream(client, s3_bucket, "stream", lambda v: None, part_size=PART)
    assert result.verified_against == "s3-checksum"


def test_body_reader_fast_path_and_fallback_agree(client, s3_bucket):
    from backup_pipelines.core.repository.s3.client import body_reader

    data = os.urandom(3 * MiB + 5)
    client.put_object(Bucket=s3_bucket, Key="b", Body=data)

    class OnlyRead:  # a body without urllib3 internals: the read()+copy fallback
        def __init__(self, body):
            self.body = body

        def read(self, n):
            return self.body.read(n)

    for wrap in (lambda b: b, OnlyRead):
        body = client.get_object(Bucket=s3_bucket, Key="b")["Body"]
        readinto = body_reader(wrap(body))
        buf = bytearray(len(data) + 10)
        view, got = memoryview(buf), 0
        while n := readinto(view[got : got + 1_000_000]):
            got += n
        assert buf[:got] == data
        body.close()
