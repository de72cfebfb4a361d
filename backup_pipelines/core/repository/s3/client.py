"""The S3 client as the stream layer wants it, error translation, and zero-copy body reads.

Client settings, and why:
- `max_pool_connections` above the transfer concurrency, so parallel parts never queue for a
  connection (plus a few for HEAD/LIST/abort issued alongside).
- botocore's own retries off (one attempt): every call goes through `retry.RetryPolicy`, the
  one retry layer, so a part is tried at most max_attempts times, not botocore's 3 times
  that (callers outside the repository, e.g. offsite's listing, may ask for botocore's).
- checksums `when_required`: botocore would otherwise CRC every body itself; the uploader
  supplies its own CRC-32 values (computed once, in parallel) and the downloader verifies
  what it needs, so the SDK does not hash the data a second time.
- `payload_signing_enabled=False`: without it, botocore SHA-256-hashes every body sent
  over plain http (local S3-compatible endpoints). Integrity comes from the CRC-32 the
  server verifies; over https this is botocore's default anyway.
- path-style addressing for custom endpoints (MinIO, Ceph, moto), which rarely have
  wildcard DNS for virtual-host buckets.
- a plain botocore client (what boto3's `client()` returns too, minus the injected
  upload_file/download_file helpers, which nothing here uses): importing boto3 pulls in
  s3transfer and costs every `stream put/get` invocation ~40 ms of CPU for nothing.
Credentials come only from the standard AWS chain (environment, shared files, SSO,
container or instance roles); nothing here reads, logs or stores them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from ...errors import BackupPipelinesError, IntegrityError, NotFoundError, StorageError
from .retry import Cancelled, describe_error, error_code, http_status
from .url import check_endpoint_url

S3Client = Any  # a botocore/boto3 "s3" client; neither ships a static type for it

CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    max_pool_connections: int = 16,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    botocore_max_attempts: int = 1,
    path_style: bool | None = None,
) -> S3Client:
    """A thread-safe S3 client tuned for large streaming transfers (see module docstring)."""
    if endpoint_url is not None:
        check_endpoint_url(endpoint_url)
    if path_style is None:
        path_style = endpoint_url is not None
    config = Config(
        region_name=region,
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max(1, botocore_max_attempts)},
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"payload_signing_enabled": False, "addressing_style": "path" if path_style else "auto"},
        user_agent_extra="backup-pipelines",
    )
    with _CLIENT_LOCK:
        return _new_session().create_client("s3", endpoint_url=endpoint_url, config=config)


_CLIENT_LOCK = threading.Lock()
_LOADER: Any = None


def _new_session() -> botocore.session.Session:
    """A fresh session (credentials and config resolved now) sharing the parsed API models.

    Sessions are not thread-safe, so each client gets its own; parsing botocore's JSON
    models is most of the ~100 ms a new session's first client costs, and that part is
    immutable, so the loader is shared (a new client then takes ~20 ms).
    """
    global _LOADER
    bc = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = bc.get_component("data_loader")
    else:
        bc.register_component("data_loader", _LOADER)
    return bc


def s3_url(bucket: str, key: str | None = None) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def storage_error(
    err: BaseException, *, action: str, bucket: str, key: str | None = None, attempts: int | None = None
) -> BackupPipelinesError:
    """Map a botocore/socket error to the operator-facing error for `action` on bucket/key."""
    if isinstance(err, BackupPipelinesError):
        return err
    where = s3_url(bucket, key)
    tried = f" after {attempts} attempts" if attempts and attempts > 1 else ""
    if isinstance(err, Cancelled):
        return StorageError(f"{action} {where} was aborted", key=where)
    if isinstance(err, ClientError):
        code, status = error_code(err), http_status(err)
        if code == "NoSuchBucket":
            return NotFoundError(
                f"bucket {bucket} does not exist (while trying to {action} {where})",
                key=where,
                hint="create the bucket, or fix the bucket name in the repository URL and the endpoint_url",
            )
        if code in NOT_FOUND_CODES or status == 404:
            return NotFoundError(
                f"{where} does not exist",
                key=where,
                hint="check the key or prefix; list the repository to see what is stored",
            )
        if code == "NoSuchUpload":
            return StorageError(
                f"the multipart upload for {where} no longer exists (aborted by another process or a "
                "lifecycle rule?) while trying to {action}".replace("{action}", action),
                key=where,
                hint="rerun the upload; check for lifecycle rules that abort incomplete uploads too early",
            )
        if code in ("PreconditionFailed", "412") or status == 412:
            return IntegrityError(
                f"{where} changed while it was being read",
                key=where,
                hint="another writer replaced the object; read it again",
            )
        if code in CREDENTIAL_CODES:
            return StorageError(
                f"S3 rejected the credentials while trying to {action} {where}: {describe_error(err)}",
                key=where,
                hint="check the AWS credentials in the standard chain (AWS_ACCESS_KEY_ID / AWS_PROFILE / "
                "instance role), that they are current, and that the region and endpoint are right",
            )
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            return StorageError(
                f"access denied while trying to {action} {where}",
                key=where,
                hint="grant the credentials s3:GetObject, s3:PutObject, s3:ListBucket, s3:DeleteObject, "
                "s3:AbortMultipartUpload and s3:ListBucketMultipartUploads on the bucket and prefix",
            )
        return StorageError(
            f"S3 failed to {action} {where}{tried}: {describe_error(err)}",
            key=where,
            hint="check the S3 endpoint's health and rerun; nothing partial is left visible",
        )
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return StorageError(
            f"no usable AWS credentials to {action} {where}",
            key=where,
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or attach an instance role",
        )
    if isinstance(err, EndpointConnectionError):
        return StorageError(
            f"cannot reach the S3 endpoint to {action} {where}{tried}: {describe_error(err)}",
            key=where,
            hint="check endpoint_url, DNS, proxies and that the S3 service is up",
        )
    return StorageError(
        f"failed to {action} {where}{tried}: {describe_error(err)}",
        key=where,
        hint="check the network path to the S3 endpoint and rerun",
    )


def body_reader(body: Any) -> Callable[[memoryview], int]:
    """A readinto for a botocore StreamingBody that lands bytes straight in the caller's buffer.

    botocore's read() goes through urllib3, which allocates and joins chunks; the
    http.client response underneath reads from the socket into our buffer with no copy.
    Falls back to read()+copy where the internals differ. Content is never decoded here:
    botocore disables urllib3's decoding too, so both paths see the raw bytes.
    """
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if fp is not None and callable(getattr(fp, "readinto", None)) and not getattr(raw, "chunked", False):
        return fp.readinto  # type: ignore[no-any-return]

    def readinto(view: memoryview) -> int:
        data = body.read(len(view))
        view[: len(data)] = data
        return len(data)

    return readinto
