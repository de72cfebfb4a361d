"""Standalone put/get of one stream with a stored whole-object checksum (`stream put/get`).

Design: `put_stream` uploads (per-part CRC-32 verified by S3, the object checksum checked
after completion, see `upload`), then writes a sidecar object `<key>.checksum.json` with
the stream's size, CRC-32 and the ETag it was stored under. `get_stream` reads the
sidecar first, CRCs the bytes as they stream out, and raises IntegrityError at the end
if they differ from the record (or at once, before any output, if the size differs).
Without a sidecar it falls back to S3's own whole-object CRC-32 where there is one
(single PUTs, FULL_OBJECT uploads; a COMPOSITE checksum is a CRC of part CRCs that a
streaming read cannot check), and says what it checked in `verified_against`.

Why a sidecar and not S3's checksum alone: the S3 checksum travels with whoever writes
the object last: any SDK overwriting the key stores a fresh, matching checksum, so a
replaced object would verify. Why not metadata: the CRC of a stream is known only after
the last part, when object metadata can no longer be set without copying the object.
CRC-32 (not SHA-256) because it is already computed for the upload, so the record is
free; it detects corruption and accidental replacement, not a deliberate forgery (anyone
who can overwrite the object can rewrite the sidecar; the backup manifests keep SHA-256
digests for that). The sidecar is written after the commit, so a crash in between leaves
an object without a record: `get_stream` then verifies against S3's checksum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from ...errors import IntegrityError
from .checksum import ChecksumRecord, sidecar_key
from .client import S3Client, s3_url, storage_error
from .download import Download, DownloadResult
from .retry import RetryPolicy, error_code
from .upload import MultipartUpload, UploadInfo

MiB = 1024 * 1024


def put_stream(
    client: S3Client,
    bucket: str,
    key: str,
    source: BinaryIO | Callable[[memoryview], int | None],
    *,
    part_size: int = 16 * MiB,
    concurrency: int = 8,
    size_hint: int | None = None,
    retry: RetryPolicy | None = None,
    sidecar: bool = True,
    extra_args: dict[str, Any] | None = None,
) -> UploadInfo:
    """Upload everything `source` yields (a binary file or a readinto) and record its checksum."""
    readinto = source if callable(source) else source.readinto  # type: ignore[union-attr]
    upload = MultipartUpload(
        client,
        bucket,
        key,
        part_size=part_size,
        concurrency=concurrency,
        size_hint=size_hint,
        retry=retry,
        extra_args=extra_args,
    )
    with upload:
        upload.write_from(readinto)
        info = upload.commit()
    if sidecar:
        write_checksum_record(client, bucket, key, info, retry)
    return info


def write_checksum_record(
    client: S3Client, bucket: str, key: str, info: UploadInfo, retry: RetryPolicy | None = None
) -> None:
    """Store the sidecar `<key>.checksum.json` that `get_stream` verifies against."""
    if info.crc32 is None:
        return
    body = ChecksumRecord(size=info.size, crc32=info.crc32, etag=info.etag).to_json()
    try:
        (retry or RetryPolicy()).call(
            lambda: client.put_object(Bucket=bucket, Key=sidecar_key(key), Body=body, ContentType="application/json"),
            what=f"record the checksum of {s3_url(bucket, key)}",
        )
    except Exception as err:
        raise storage_error(err, action="write the checksum record", bucket=bucket, key=sidecar_key(key)) from None


def read_checksum_record(
    client: S3Client, bucket: str, key: str, retry: RetryPolicy | None = None
) -> ChecksumRecord | None:
    """The sidecar record of `key`, or None if there is none."""
    policy = retry or RetryPolicy()
    try:
        raw = policy.call(
            lambda: client.get_object(Bucket=bucket, Key=sidecar_key(key))["Body"].read(),
            what=f"read the checksum record of {s3_url(bucket, key)}",
        )
    except ClientError as err:
        if error_code(err) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise storage_error(err, action="read the checksum record", bucket=bucket, key=sidecar_key(key)) from None
    except Exception as err:
        raise storage_error(err, action="read the checksum record", bucket=bucket, key=sidecar_key(key)) from None
    try:
        return ChecksumRecord.from_json(raw)
    except ValueError as err:
        raise IntegrityError(
            f"the checksum record {s3_url(bucket, sidecar_key(key))} is unreadable: {err}",
            key=s3_url(bucket, key),
            hint="rewrite the object with `stream put`",
        ) from None


def get_stream(
    client: S3Client,
    bucket: str,
    key: str,
    sink: Callable[[memoryview], object],
    *,
    part_size: int = 16 * MiB,
    concurrency: int = 8,
    retry: RetryPolicy | None = None,
    verify: bool = True,
) -> DownloadResult:
    """Stream `key` into `sink`; with verify, raise IntegrityError at the end on a checksum mismatch."""
    record = read_checksum_record(client, bucket, key, retry) if verify else None
    download = Download(
        client,
        bucket,
        key,
        part_size=part_size,
        concurrency=concurrency,
        retry=retry,
        verify=verify,
        expected_crc32=record.crc32 if record else None,
        expected_size=record.size if record else None,
    )
    return download.read_into(sink)
