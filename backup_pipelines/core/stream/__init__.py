"""Streaming S3 transfers: a multipart uploader and a parallel ranged downloader (like gof3r).

- `MultipartUpload`: an ObjectWriter; parts upload in parallel while the caller writes,
  memory bounded by concurrency x part size, CRC-32 verified per part and whole.
- `Download`: streams an object in order into a sink, going parallel when one
  connection is slow; `ObjectReader` wraps it as a file.
- `put_stream` / `get_stream`: the same with a stored whole-object checksum (sidecar).
- `make_client`: the S3 client settings these rely on.
"""

from __future__ import annotations

from .checksum import ChecksumRecord, crc32, crc32_combine, crc32_from_b64, crc32_to_b64, sidecar_key
from .download import Download, DownloadResult, ObjectReader
from .retry import RetryPolicy, is_retryable
from .s3client import S3Client, make_client, storage_error
from .transfer import get_stream, put_stream, read_checksum_record
from .upload import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MultipartUpload,
    PartSizer,
    UploadInfo,
)

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
    "UploadInfo",
    "crc32",
    "crc32_combine",
    "crc32_from_b64",
    "crc32_to_b64",
    "get_stream",
    "is_retryable",
    "make_client",
    "put_stream",
    "read_checksum_record",
    "sidecar_key",
    "storage_error",
]
