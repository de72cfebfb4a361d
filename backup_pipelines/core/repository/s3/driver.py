"""A repository in an S3 bucket (AWS or any S3-compatible service), under an optional prefix.

Writes stream through `upload.MultipartUpload`: parts upload in parallel while the backup
runs, nothing is visible before commit, and interrupted uploads are multipart uploads
that `cleanup_incomplete` aborts. Reads go through `download.Download`. Integrity of stored
objects is checked above this layer (the manifests' SHA-256), so reads skip S3's CRC by
default; uploads are still CRC-32 verified by the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from ...errors import BackupPipelinesError, NotFoundError, StorageError
from ..base import ObjectInfo, Repository
from .client import S3Client, make_client, s3_url, storage_error
from .download import Download
from .retry import RetryPolicy, describe_error, error_code, http_status
from .upload import MultipartUpload
from .url import parse_s3_url

DELETE_BATCH = 1000  # S3's DeleteObjects limit
log = logging.getLogger(__name__)
_WARNED_NO_UPLOAD_LISTING: set[tuple[str, str]] = set()  # (endpoint, bucket): warned once per process


def _not_implemented(err: BaseException) -> bool:
    """A permanent "this server does not do that" (s3rver and some gateways: 501 NotImplemented)."""
    return error_code(err) in ("NotImplemented", "501") or http_status(err) == 501


class S3Repository(Repository):
    """Objects at s3://bucket/prefix/<key>; keys given to and returned by methods are relative.

    `client` replaces the default one (from `client.make_client`, credentials from the
    standard AWS chain); `retry` is the per-request budget for data and small calls;
    `verify_reads` checks S3's whole-object CRC-32 on reads where S3 keeps one.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = 16 * 1024 * 1024,
        concurrency: int = 8,
        client: S3Client | None = None,
        retry: RetryPolicy | None = None,
        verify_reads: bool = False,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self.retry = retry or RetryPolicy()
        self.verify_reads = verify_reads
        self._owns_client = client is None
        self.client = (
            client
            if client is not None
            else make_client(endpoint_url=endpoint_url, region=region, max_pool_connections=self.concurrency + 4)
        )
        self._bucket_checked = False
        self._no_upload_listing = False

    # -- keys -----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.prefix + key

    def _relative(self, s3_key: str) -> str:
        return s3_key[len(self.prefix) :]

    def describe(self, key: str) -> str:
        return s3_url(self.bucket, self.prefix + key)

    def _error(self, err: BaseException, action: str, key: str | None = None) -> Exception:
        return storage_error(err, action=action, bucket=self.bucket, key=self._key(key) if key else None)

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return self.retry.call(fn, what=what)

    # -- objects --------------------------------------------------------------------------

    def open_writer(self, key: str, *, size_hint: int | None = None) -> MultipartUpload:
        return MultipartUpload(
            self.client,
            self.bucket,
            self._key(key),
            key=key,
            part_size=self.part_size,
            concurrency=self.concurrency,
            size_hint=size_hint,
            retry=self.retry,
        )

    def read_into(self, key: str, sink: Callable[[memoryview], object]) -> int:
        dl = Download(
            self.client,
            self.bucket,
            self._key(key),
            part_size=self.part_size,
            concurrency=self.concurrency,
            retry=self.retry,
            verify=self.verify_reads,
        )
        return dl.read_into(sink).size

    def get_bytes(self, key: str) -> bytes:
        s3_key = self._key(key)
        try:
            data: bytes = self._call(
                lambda: self.client.get_object(Bucket=self.bucket, Key=s3_key)["Body"].read(),
                f"get {self.describe(key)}",
            )
        except Exception as err:
            raise self._error(err, "read", key) from None
        return data

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.open_writer(key, size_hint=len(data)) as w:
            w.write(data)
            w.commit()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under `prefix` in key order; a failed page is re-requested from where it broke off."""
        paginator = self.client.get_paginator("list_objects_v2")
        full_prefix = self.prefix + prefix
        token: str | None = None  # NextContinuationToken of the last page fully yielded
        what = f"list {s3_url(self.bucket, full_prefix)}"
        tries = self.retry.attempts(what)  # per page: a new budget once a page arrived
        while True:
            config = {"StartingToken": token} if token else {}
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix, PaginationConfig=config):
                    tries = self.retry.attempts(what)
                    for obj in page.get("Contents", []):
                        yield ObjectInfo(self._relative(obj["Key"]), int(obj["Size"]), obj.get("LastModified"))
                    token = page.get("NextContinuationToken")
                return
            except Exception as err:
                try:
                    tries.failed(err)
                except Exception as final:
                    raise storage_error(
                        final, action="list", bucket=self.bucket, key=full_prefix, attempts=tries.used
                    ) from None

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, s3_keys: list[str]) -> None:
        objects = [{"Key": k} for k in s3_keys]
        try:
            resp = self._call(
                lambda: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}),
                f"delete {len(objects)} objects from {s3_url(self.bucket, self.prefix)}",
            )
        except Exception as err:
            raise storage_error(err, action="delete objects in", bucket=self.bucket, key=s3_keys[0]) from None
        errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise StorageError(
                f"S3 refused to delete {len(errors)} of {len(s3_keys)} objects, e.g. "
                f"{s3_url(self.bucket, first.get('Key'))}: {first.get('Code')} "
                f"{first.get('Message', '')}".rstrip(),
                key=s3_url(self.bucket, first.get("Key")),
                hint="check that the credentials may s3:DeleteObject and that object lock does not hold them",
            )

    def stat(self, key: str) -> ObjectInfo | None:
        s3_key = self._key(key)
        try:
            head = self._call(
                lambda: self.client.head_object(Bucket=self.bucket, Key=s3_key), f"stat {self.describe(key)}"
            )
        except Exception as err:
            if error_code(err) in ("404", "NoSuchKey", "NotFound") or http_status(err) == 404:
                self._check_bucket()  # a HEAD 404 cannot tell a missing key from a missing bucket
                return None
            raise self._error(err, "stat", key) from None
        return ObjectInfo(key, int(head["ContentLength"]), head.get("LastModified"))

    def _check_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            self._call(lambda: self.client.head_bucket(Bucket=self.bucket), f"check bucket {self.bucket}")
        except Exception as err:
            if error_code(err) in ("404", "NoSuchBucket", "NotFound") or http_status(err) == 404:
                raise NotFoundError(
                    f"bucket {self.bucket} does not exist",
                    key=self.url,
                    hint="create the bucket, or fix the bucket name in the repository URL and the endpoint_url",
                ) from None
            raise storage_error(err, action="check the bucket", bucket=self.bucket) from None
        self._bucket_checked = True

    def cleanup_incomplete(
        self, prefix: str, older_than: datetime, *, keep: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Abort multipart uploads under `prefix` started before `older_than` unless `keep` spares them."""
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=UTC)
        full_prefix = self.prefix + prefix
        removed: list[str] = []
        if self._no_upload_listing:
            return removed
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            stale: list[tuple[str, str]] = []
            # Retried as a whole (open uploads are few): botocore's own retries are off.
            pages = self._call(
                lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full_prefix)),
                f"list the open uploads in {s3_url(self.bucket, full_prefix)}",
            )
            for page in pages:
                for up in page.get("Uploads", []):
                    key, initiated = up["Key"], up.get("Initiated")
                    if key.startswith(full_prefix) and initiated is not None and initiated < older_than:
                        stale.append((key, up["UploadId"]))
            for key, upload_id in stale:  # every upload listed before `keep` reads the leases
                if keep is not None and keep(self._relative(key)):
                    continue
                try:
                    self._call(
                        lambda k=key, u=upload_id: self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=k, UploadId=u
                        ),
                        f"abort the stale upload of {s3_url(self.bucket, key)}",
                    )
                except Exception as err:
                    if error_code(err) == "NoSuchUpload":
                        continue
                    raise
                removed.append(self._relative(key))
        except BackupPipelinesError:
            raise
        except Exception as err:
            if _not_implemented(err):
                self._warn_no_upload_listing(err)
                return removed
            raise storage_error(
                err, action="clean up incomplete uploads in", bucket=self.bucket, key=full_prefix
            ) from None
        return removed

    def _warn_no_upload_listing(self, err: BaseException) -> None:
        """Housekeeping the server does not offer must not stop a backup: say so once, and what to do."""
        self._no_upload_listing = True
        key = (self.client.meta.endpoint_url, self.bucket)
        if key in _WARNED_NO_UPLOAD_LISTING:
            return
        _WARNED_NO_UPLOAD_LISTING.add(key)
        log.warning(
            "the S3 server at %s does not implement ListMultipartUploads (%s): uploads that an "
            "interrupted run left open in %s cannot be found and aborted by cleanup. This is a "
            "property of the server, not a transient fault: add a lifecycle rule that aborts "
            "incomplete multipart uploads after a day, or clear them with the server's own tools",
            key[0],
            describe_error(err),
            self.url,
        )

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
