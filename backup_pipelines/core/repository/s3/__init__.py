"""The S3 driver and the transfer code it runs on (what gof3r was: streaming multipart put, parallel get).

- `S3Repository` (`driver`): the repository interface over s3://bucket/prefix.
- `MultipartUpload` (`upload`): an ObjectWriter; parts upload in parallel while the caller
  writes, memory bounded, CRC-32 verified per part and whole.
- `Download` (`download`): streams an object in order into a sink, going parallel when one
  connection is slow; `ObjectReader` wraps it as a file.
- `put_stream` / `get_stream` (`sidecar`): the same with a stored whole-object checksum record.
- `make_client` (`client`): the S3 client settings these rely on; `parse_s3_url` (`url`).
"""

from __future__ import annotations

from .checksum import ChecksumRecord, crc32, crc32_combine, crc32_from_b64, crc32_to_b64, sidecar_key
from .client import S3Client, make_client, storage_error
from .download import Download, DownloadResult, ObjectReader
from .driver import S3Repository
from .retry import RetryPolicy, is_retryable
from .sidecar import get_stream, put_stream, read_checksum_record
from .upload import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MultipartUpload,
    PartSizer,
    UploadInfo,
)
from .url import parse_s3_url

__all__ = [
    "MAX_OBJECT_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "ChecksumRecord",
    "Download",
    "DownloadResult",
    "MultipartUpload",
    "ObjectReader",
    "PartSizer",
    "RetryPolicy",
    "S3Client",
    "S3Repository",
    "UploadInfo",
    "crc32",
    "crc32_combine",
    "crc32_from_b64",
    "crc32_to_b64",
    "get_stream",
    "is_retryable",
    "make_client",
    "parse_s3_url",
    "put_stream",
    "read_checksum_record",
    "sidecar_key",
    "storage_error",
]
