"""Streaming multipart upload of a stream of unknown length (gof3r's `put`, as an ObjectWriter).

Data flow: `write()` copies the caller's bytes once, into a part-sized bytearray; a full
part is handed (not copied) to a thread pool that CRCs and uploads it while the caller keeps
writing. At most `concurrency` parts are in flight: the writer blocks when the budget is
used, so memory stays at (concurrency + 1) x part size. Part buffers are recycled, so
their pages are faulted in only once.

Integrity: every part carries x-amz-checksum-crc32, which S3 verifies (BadDigest -> the part
is retried). A server that does not echo the part's CRC-32 (s3rver; older S3-compatible
servers) has its answer checked another way: the part's ETag, the MD5 of what it stored,
must be the MD5 of what was sent (computed only then), else the part is re-sent; where the
ETag is not an MD5 either (SSE-KMS), the part is re-sent with Content-MD5 for the server to
check. No part is ever accepted on the server's word alone.

At completion S3 derives the object checksum from the part checksums: by
default COMPOSITE (CRC-32 of the concatenated part CRCs, "xxxx-N"), optionally FULL_OBJECT
(the CRC of the whole stream, which we also send so S3 checks it). moto 5.2.5 verifies
neither the part header (it stores what the client claims) nor Content-MD5, but at
completion it computes the object checksum from the bytes it actually received; so after
completing we HEAD the object with ChecksumMode=ENABLED and compare it with the value our
part CRCs give: a part damaged on the way fails the commit (IntegrityError) and the
object is deleted. COMPOSITE is the default because it is the type S3-compatible servers
have supported longest, and moto completes it in half the time (no server-side
concatenation and second CRC pass). Either way the CRC of the whole stream is derived from
the part CRCs (no second pass) and reported in UploadInfo.crc32. Objects smaller than a
part go through one PutObject with Content-MD5 as well, and the returned ETag (the MD5 of
what was stored, for non-KMS objects) is checked too. After completion the HEAD must show
that the object under the key is this upload's (same ETag, or a multipart ETag / CRC-32 the
parts give); otherwise the commit fails: it never passes with a warning.

Nothing is visible under the key before commit. Any failure after the retry budget, an
explicit abort() or an exception inside `with` aborts the multipart upload.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ...errors import BackupPipelinesError, IntegrityError, StorageError
from ..base import Buffer, ObjectInfo
from .checksum import crc32, crc32_combine, crc32_from_b64, crc32_to_b64
from .client import S3Client, s3_url, storage_error
from .retry import Retryable, RetryPolicy, error_code

log = logging.getLogger("backup_pipelines.stream")

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * TiB
FLAT_PARTS = 1000  # parts kept at the base size before growth starts (no size hint)
HINTED_FLAT_PARTS = 9000  # with a size hint: the hint (plus HINT_MARGIN) fits in these
HINT_MARGIN = 1.25  # a host grows between backups: room for 25% more than last time
ABORT_ATTEMPTS = 3  # tries of AbortMultipartUpload after a failure
STEP_ALIGN = 4096  # page-aligned growth steps
TIER = 16 * MiB  # grown part sizes are rounded up to this, so runs of parts share buffers


class PartSizer:
    """Part sizes for a stream of unknown length that can never run out of part numbers.

    The first `flat` parts use the base size (16 GB at 16 MiB parts without a hint). Beyond
    them sizes grow linearly, rounded up to TIER so ~100 consecutive parts share one size and
    recycle each other's buffers, with the smallest slope that makes 10,000 parts hold S3's
    5 TiB object limit (the largest part stays near 1.2 GiB; doubling would reach 5 GiB).
    A size hint (the previous backup of the same host and kind) raises the base so the hint
    plus HINT_MARGIN fits in 9,000 flat parts: a stream of the expected size never grows.
    """

    def __init__(self, part_size: int, size_hint: int | None = None) -> None:
        base = max(int(part_size), MIN_PART_SIZE)
        self.flat = FLAT_PARTS
        if size_hint:
            self.flat = HINTED_FLAT_PARTS
            per_part = -(-int(size_hint * HINT_MARGIN) // HINTED_FLAT_PARTS)
            base = max(base, -(-per_part // MiB) * MiB)
        self.base = min(base, MAX_PART_SIZE)
        growing = MAX_PARTS - self.flat
        shortfall = MAX_OBJECT_SIZE - MAX_PARTS * self.base
        if shortfall <= 0:
            self.step = 0
        else:
            step = -(-2 * shortfall // (growing * (growing + 1)))
            self.step = -(-step // STEP_ALIGN) * STEP_ALIGN

    def size(self, part_number: int) -> int:
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"part number {part_number} outside 1..{MAX_PARTS}")
        extra = max(0, part_number - self.flat) * self.step
        return min(MAX_PART_SIZE, self.base + -(-extra // TIER) * TIER)

    def capacity(self, parts: int = MAX_PARTS) -> int:
        """Bytes that the first `parts` parts hold."""
        flat = min(parts, self.flat)
        return flat * self.base + sum(self.size(n) for n in range(self.flat + 1, parts + 1))

    @property
    def largest(self) -> int:
        return self.size(MAX_PARTS)


class BufferPool:
    """Part buffers bounded by bytes: those being filled, uploading and idle together stay
    within `budget`, so memory does not follow the part size as the stream grows.

    One part larger than the whole budget may still exist, alone (the writer then waits
    for it to upload before filling the next): S3's 10,000-part limit makes parts that big
    only on multi-TiB streams that came without a size hint. Idle buffers of a size that is
    no longer wanted are freed at once (part sizes never shrink).
    """

    def __init__(self, budget: int) -> None:
        self.budget = max(1, int(budget))
        self.allocated = 0
        self.peak = 0
        self._free: list[bytearray] = []
        self._cond = threading.Condition()
        self._closed = False

    def take(self, size: int, cancel: threading.Event) -> bytearray:
        with self._cond:
            while True:
                if cancel.is_set() or self._closed:
                    raise _Aborted()
                for i, buf in enumerate(self._free):
                    if len(buf) == size:
                        return self._free.pop(i)
                while self._free:
                    self.allocated -= len(self._free.pop())
                if self.allocated == 0 or self.allocated + size <= self.budget:
                    self.allocated += size
                    self.peak = max(self.peak, self.allocated)
                    break
                self._cond.wait(0.1)
        return bytearray(size)

    def give(self, buf: bytearray, accounted: int) -> None:
        """Return a buffer (`accounted` is the size it was taken with: the last part is shrunk)."""
        with self._cond:
            if self._closed or len(buf) != accounted:
                self.allocated -= accounted
            else:
                self._free.append(buf)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._free:
                self.allocated -= len(self._free.pop())
            self._cond.notify_all()


class _Aborted(Exception):
    """The upload was aborted while the writer waited for buffer space."""


@dataclass(frozen=True)
class UploadInfo(ObjectInfo):
    """ObjectInfo plus what the upload learnt: ETag, CRC-32 of the whole stream, part count."""

    etag: str = ""
    crc32: int | None = None
    parts: int = 0


@dataclass
class _Part:
    number: int
    size: int
    crc: int
    etag: str
    md5: bytes | None = None  # when the part was verified by its MD5 (no CRC-32 confirmation)


class MultipartUpload:
    """An ObjectWriter that streams into s3://bucket/s3_key; see the module docstring.

    `key` is the name reported back in ObjectInfo (a repository passes its relative key);
    it defaults to `s3_key`. `extra_args` go to PutObject/CreateMultipartUpload (ContentType,
    Metadata, ServerSideEncryption, ...). Not thread-safe for concurrent writers; abort()
    may be called from another thread to stop a blocked writer.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        s3_key: str,
        *,
        key: str | None = None,
        part_size: int = 16 * MiB,
        concurrency: int = 8,
        size_hint: int | None = None,
        buffer_bytes: int | None = None,
        retry: RetryPolicy | None = None,
        checksum: bool = True,
        checksum_type: str = "COMPOSITE",
        extra_args: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.s3_key = s3_key
        self.key = key if key is not None else s3_key
        self.retry = retry or RetryPolicy()
        self.checksum = checksum
        if checksum_type not in ("COMPOSITE", "FULL_OBJECT"):
            raise ValueError(f"checksum_type must be COMPOSITE or FULL_OBJECT, not {checksum_type!r}")
        self.checksum_type = checksum_type
        self.extra_args = dict(extra_args or {})
        self.concurrency = max(1, int(concurrency))
        self.sizer = PartSizer(part_size, size_hint)
        # (concurrency + 1) parts: `concurrency` uploading while the next one fills.
        default_budget = max((self.concurrency + 1) * max(int(part_size), MIN_PART_SIZE), 2 * self.sizer.base)
        self.buffers = BufferPool(buffer_bytes or default_budget)
        self.where = s3_url(bucket, s3_key)
        self.info: UploadInfo | None = None

        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._slots = threading.Semaphore(self.concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._parts: dict[int, _Part] = {}
        self._error: BaseException | None = None
        self._upload_id: str | None = None
        self._next_part = 1
        self._buf: bytearray | None = None
        self._view = memoryview(b"")  # the writable view of _buf
        self._fill = 0
        self._size = 0
        self._state = "open"  # open -> committing -> committed | aborted

    # -- the ObjectWriter interface ------------------------------------------------------

    def write(self, data: Buffer) -> int:
        """Append `data` (copied once; the caller may reuse its buffer on return)."""
        self._check_writable()
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        n = view.nbytes
        pos = 0
        while pos < n:
            self._current_buffer()
            target = self._view
            take = min(n - pos, len(target) - self._fill)
            # Through a memoryview: one memcpy (bytearray slice assignment would copy twice).
            target[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
            self._size += take
        return n

    def write_from(self, readinto: Callable[[memoryview], int | None]) -> int:
        """Fill parts straight from a source's readinto (a pipe, a file) until EOF: no copy at all."""
        self._check_writable()
        total = 0
        while True:
            self._current_buffer()
            n = readinto(self._view[self._fill :])
            if n is None:  # "no data yet" from a non-blocking source: not an end of stream
                raise ValueError("write_from() needs a blocking source")
            if not n:
                return total
            self._fill += n
            self._size += n
            total += n

    def commit(self) -> UploadInfo:
        """Upload what is left, wait for every part, complete and verify; then the object is visible."""
        self._check_writable()
        self._state = "committing"
        try:
            info = self._put_single() if self._upload_id is None else self._complete()
        except BaseException as err:
            self.abort()
            if isinstance(err, BackupPipelinesError):
                raise
            if isinstance(err, Exception):
                raise storage_error(err, action="upload", bucket=self.bucket, key=self.s3_key) from None
            raise
        self._state = "committed"
        self.info = info
        return info

    def abort(self) -> None:
        """Stop, drop the parts and abort the multipart upload. Idempotent; never raises for cleanup."""
        with self._lock:
            if self._state in ("aborted", "committed"):
                return
            self._state = "aborted"
        self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for _ in range(self.concurrency):
            self._slots.release()  # wake a writer blocked on the budget (cancelled parts never release)
        self._detach_buffer()
        self.buffers.close()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            # A short budget: the upload is lost already, and cleanup aborts what this cannot.
            replace(self.retry, max_attempts=min(self.retry.max_attempts, ABORT_ATTEMPTS)).call(
                lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.s3_key, UploadId=upload_id),
                what=f"abort multipart upload of {self.where}",
            )
        except Exception as err:
            if error_code(err) == "NoSuchUpload":
                return
            log.warning(
                "could not abort the multipart upload %s of %s: %s; its parts stay billed until "
                "cleanup_incomplete() or a lifecycle rule removes them",
                upload_id,
                self.where,
                err,
            )

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    @property
    def size(self) -> int:
        return self._size

    # -- writing ----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._state != "open":
            raise StorageError(f"the upload of {self.where} is already {self._state}", key=self.where)
        if self._error is not None:
            self._fail()

    def _fail(self) -> None:
        """Abort, then raise the error that lost the upload (a part's, after its retries)."""
        err = self._error
        self.abort()
        assert err is not None
        if isinstance(err, BackupPipelinesError):
            raise err
        action = "upload"
        if isinstance(err, _PartError):
            action, err = f"upload part {err.number} of", err.err
        if isinstance(err, _Damaged):
            raise IntegrityError(
                f"{self.where}: {err}, on each of {self.retry.max_attempts} attempts",
                key=self.where,
                hint="the data is being damaged between this host and the S3 server (check NICs, proxies, "
                "the storage service); nothing was stored under the key; rerun",
            ) from None
        raise storage_error(
            err, action=action, bucket=self.bucket, key=self.s3_key, attempts=self.retry.max_attempts
        ) from None

    def _current_buffer(self) -> bytearray:
        """The part being filled; a full one is handed to the pool only when more data arrives,
        so a stream that ends exactly on a part boundary never uploads an empty last part."""
        buf = self._buf
        if buf is None:
            buf = self._buf = self._take_buffer(self.sizer.size(1))
            self._view = memoryview(buf)
        elif self._fill == len(buf):
            self._view.release()
            self._submit(buf)
            if self._next_part > MAX_PARTS:
                self._error = StorageError(
                    f"{self.where} would exceed S3's limit of {MAX_PARTS} parts / 5 TiB",
                    key=self.where,
                    hint="split the stream, or pass a size hint so larger parts are used from the start",
                )
                self._fail()
            buf = self._buf = self._take_buffer(self.sizer.size(self._next_part))
            self._view = memoryview(buf)
            self._fill = 0
        return buf

    def _detach_buffer(self) -> bytearray | None:
        """Take the part being filled (its view released, so it can be shrunk in place)."""
        buf, self._buf = self._buf, None
        self._view.release()
        self._view = memoryview(b"")
        return buf

    def _take_buffer(self, size: int) -> bytearray:
        """A part buffer within the byte budget: blocks while uploading parts hold it."""
        try:
            return self.buffers.take(size, self._cancel)
        except _Aborted:
            if self._error is not None:
                self._fail()
            raise StorageError(f"the upload of {self.where} was aborted", key=self.where) from None

    def _submit(self, buf: bytearray, accounted: int | None = None) -> None:
        if self._upload_id is None:
            self._create()
        self._slots.acquire()  # the in-flight budget: blocks while `concurrency` parts are uploading
        if self._error is not None or self._cancel.is_set():
            self._slots.release()
            if self._error is not None:
                self._fail()
            raise StorageError(f"the upload of {self.where} was aborted", key=self.where)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-put")
        number = self._next_part
        try:
            self._pool.submit(self._upload_part, number, buf, len(buf) if accounted is None else accounted)
        except RuntimeError:  # the pool was shut down by a concurrent abort()
            self._slots.release()
            raise StorageError(f"the upload of {self.where} was aborted", key=self.where) from None
        self._next_part += 1

    def _create(self) -> None:
        args: dict[str, Any] = dict(self.extra_args)
        if self.checksum:
            args["ChecksumAlgorithm"] = "CRC32"
            if self.checksum_type == "FULL_OBJECT":  # COMPOSITE is the default: older servers lack the header
                args["ChecksumType"] = "FULL_OBJECT"
        try:
            resp = self.retry.call(
                lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=self.s3_key, **args),
                what=f"start multipart upload of {self.where}",
                cancel=self._cancel,
            )
        except Exception as err:
            self._state = "aborted"
            raise storage_error(err, action="start uploading", bucket=self.bucket, key=self.s3_key) from None
        self._upload_id = resp["UploadId"]

    def _upload_part(self, number: int, buf: bytearray, accounted: int) -> None:
        try:
            crc = crc32(buf) if self.checksum else 0
            args: dict[str, Any] = {}
            if self.checksum:
                args.update(ChecksumAlgorithm="CRC32", ChecksumCRC32=crc32_to_b64(crc))

            md5: list[bytes] = []  # computed only for servers that do not confirm the CRC-32

            def attempt() -> Any:
                resp = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.s3_key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=buf,
                    **args,
                )
                echoed = resp.get("ChecksumCRC32")
                if self.checksum and echoed:
                    if crc32_from_b64(echoed) != crc:
                        raise _Damaged(f"the server computed a different CRC-32 for part {number}")
                    return resp
                # No CRC-32 confirmation (s3rver, older servers): the part's ETag, the MD5 of what
                # the server stored, must be the MD5 of what was sent.
                if not md5:
                    md5.append(hashlib.md5(buf, usedforsecurity=False).digest())
                etag = str(resp.get("ETag", "")).strip('"')
                if _etag_is_md5(resp, etag):
                    if etag != md5[0].hex():
                        raise _Damaged(f"the server stored part {number} with MD5 {etag}, {md5[0].hex()} was sent")
                    return resp
                if "ContentMD5" in args:
                    return resp  # the server checked Content-MD5 (S3 answers BadDigest otherwise)
                # An ETag that is not an MD5 (SSE-KMS, SSE-C): send again, with Content-MD5 to check.
                args["ContentMD5"] = base64.b64encode(md5[0]).decode("ascii")
                raise Retryable(f"the server confirmed neither CRC-32 nor MD5 of part {number}; re-sending it")

            resp = self.retry.call(attempt, what=f"upload part {number} of {self.where}", cancel=self._cancel)
            with self._lock:
                self._parts[number] = _Part(number, len(buf), crc, resp["ETag"], md5[0] if md5 else None)
        except BaseException as err:
            with self._lock:
                if self._error is None and not self._cancel.is_set():
                    self._error = _PartError(number, err)
            self._cancel.set()  # stop the other parts' retries: the upload is lost anyway
        finally:
            self.buffers.give(buf, accounted)
            self._slots.release()

    # -- committing -------------------------------------------------------------------

    def _put_single(self) -> UploadInfo:
        body = self._detach_buffer() or bytearray()
        del body[self._fill :]  # shrink in place: no copy of the payload
        crc = crc32(body)
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        args: dict[str, Any] = dict(self.extra_args)
        args["ContentMD5"] = base64.b64encode(md5).decode("ascii")
        if self.checksum:
            # The algorithm header too: servers that keep the checksum (moto) key it on that header.
            args.update(ChecksumAlgorithm="CRC32", ChecksumCRC32=crc32_to_b64(crc))

        def attempt() -> Any:
            resp = self.client.put_object(Bucket=self.bucket, Key=self.s3_key, Body=body, **args)
            etag = str(resp.get("ETag", "")).strip('"')
            if _etag_is_md5(resp, etag) and etag != md5.hex():
                raise Retryable(f"the stored object's MD5 {etag} differs from the {md5.hex()} sent")
            return resp

        try:
            resp = self.retry.call(attempt, what=f"put {self.where}", cancel=self._cancel)
        except Retryable as err:
            self._delete_quietly()
            raise IntegrityError(
                f"{self.where} was stored corrupted: {err}",
                key=self.where,
                hint="the data was damaged between this host and S3; rerun the upload",
            ) from None
        except Exception as err:
            raise storage_error(
                err, action="upload", bucket=self.bucket, key=self.s3_key, attempts=self.retry.max_attempts
            ) from None
        return UploadInfo(self.key, len(body), datetime.now(UTC), etag=resp.get("ETag", ""), crc32=crc, parts=0)

    def _complete(self) -> UploadInfo:
        last = self._detach_buffer()
        if last is not None and self._fill:
            accounted = len(last)
            del last[self._fill :]
            self._submit(last, accounted)
        assert self._pool is not None
        self._pool.shutdown(wait=True)
        if self._error is not None:
            self._fail()
        parts = [self._parts[n] for n in sorted(self._parts)]
        if [p.number for p in parts] != list(range(1, self._next_part)):
            raise StorageError(f"internal error: parts missing for {self.where}", key=self.where)
        total_crc = 0
        for p in parts:
            total_crc = crc32_combine(total_crc, p.crc, p.size)
        entries: list[dict[str, Any]] = []
        for p in parts:
            entry: dict[str, Any] = {"PartNumber": p.number, "ETag": p.etag}
            if self.checksum:
                entry["ChecksumCRC32"] = crc32_to_b64(p.crc)
            entries.append(entry)
        args: dict[str, Any] = {}
        if self.checksum and self.checksum_type == "FULL_OBJECT":
            args.update(ChecksumCRC32=crc32_to_b64(total_crc), ChecksumType="FULL_OBJECT")
        upload_id = self._upload_id

        def attempt() -> Any:
            return self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": entries},
                **args,
            )

        try:
            resp = self.retry.call(attempt, what=f"complete {self.where}", cancel=self._cancel)
        except Exception as err:
            if error_code(err) != "NoSuchUpload":
                raise storage_error(
                    err,
                    action="complete the upload of",
                    bucket=self.bucket,
                    key=self.s3_key,
                    attempts=self.retry.max_attempts,
                ) from None
            # A retried Complete whose first try succeeded: the object is there if HEAD agrees.
            resp = {"ETag": ""}
        self._upload_id = None  # completed: nothing left to abort
        etag = str(resp.get("ETag", ""))
        self._verify_completed(etag, self._expected_checksum(parts, total_crc), parts)
        return UploadInfo(self.key, self._size, datetime.now(UTC), etag=etag, crc32=total_crc, parts=len(parts))

    def _expected_checksum(self, parts: list[_Part], total_crc: int) -> str | None:
        """The ChecksumCRC32 S3 should report: "crc" (FULL_OBJECT) or "crc-N" (COMPOSITE)."""
        if not self.checksum:
            return None
        if self.checksum_type == "FULL_OBJECT":
            return crc32_to_b64(total_crc)
        composite = crc32(b"".join(p.crc.to_bytes(4, "big") for p in parts))
        return f"{crc32_to_b64(composite)}-{len(parts)}"

    def _verify_completed(self, etag: str, expected: str | None, parts: list[_Part]) -> None:
        """HEAD the new object: its size, and the checksum the server computed from what it got."""
        try:
            head = self.retry.call(
                lambda: self.client.head_object(Bucket=self.bucket, Key=self.s3_key, ChecksumMode="ENABLED"),
                what=f"verify {self.where}",
            )
        except Exception as err:
            raise storage_error(
                err, action="verify the completed upload of", bucket=self.bucket, key=self.s3_key
            ) from None
        head_etag = str(head.get("ETag", "")).strip('"')
        etag = etag.strip('"')
        problems = []
        if int(head.get("ContentLength", -1)) != self._size:
            problems.append(f"S3 holds {head.get('ContentLength')} bytes, {self._size} were sent")
        # Is the object under the key this upload's? Evidence, strongest first: the multipart ETag
        # the part MD5s give (where parts were checked by MD5), the CRC-32 the server computed.
        ours: bool | None = None
        md5s = [p.md5 for p in parts]
        # (S3's multipart ETag is MD5(part MD5s)-N; s3rver's, with no "-N", is the whole object's MD5.)
        multipart_etag = head_etag.count("-") == 1 and _etag_is_md5({}, head_etag.split("-")[0])
        if md5s and all(m is not None for m in md5s) and multipart_etag:
            want = hashlib.md5(b"".join(m for m in md5s if m), usedforsecurity=False).hexdigest()
            ours = head_etag.split("-")[0] == want
            if not ours:
                problems.append(f"its ETag is {head_etag}, the parts sent give {want}-{len(parts)}")
        stored = str(head.get("ChecksumCRC32") or "")
        stored_type = head.get("ChecksumType") or self.checksum_type
        if expected and stored and stored_type == self.checksum_type:
            # Compare the CRC itself: servers differ in whether they append the "-N" part count.
            crc_ok = stored.split("-")[0] == expected.split("-")[0]
            ours = crc_ok if ours is None else ours and crc_ok
            if not crc_ok:
                problems.append(f"S3 computed CRC-32 {stored} from what it received, the parts sent give {expected}")
        if etag and head_etag and head_etag != etag and not ours:
            # Never "warn and pass": nothing says the bytes under the key are the ones sent.
            raise IntegrityError(
                f"{self.where} is not what this upload completed: S3 answered the completion with ETag "
                f"{etag}, but the object now has ETag {head_etag}",
                key=self.where,
                hint="another writer replaced the object right after this upload, or the server did not keep "
                "what it confirmed; make sure one writer owns each key and rerun",
            )
        if not etag and ours is not True and not head_etag.endswith(f"-{len(parts)}"):
            raise StorageError(
                f"the upload of {self.where} vanished during completion",
                key=self.where,
                hint="rerun the upload",
            )
        if problems:
            self._delete_quietly()
            raise IntegrityError(
                f"{self.where} arrived damaged: " + "; ".join(problems),
                key=self.where,
                hint="the object was deleted; data was corrupted between this host and S3 (check NICs, "
                "proxies, the storage service), then rerun",
            )

    def _delete_quietly(self) -> None:
        try:
            self.retry.call(
                lambda: self.client.delete_object(Bucket=self.bucket, Key=self.s3_key),
                what=f"delete damaged {self.where}",
            )
        except Exception as err:
            log.error("could not delete the damaged object %s: %s", self.where, err)


class _Damaged(Retryable):
    """The server reports a checksum of what it got that is not the checksum of what was sent."""


class _PartError(Exception):
    """Carries the part number with the error that lost it."""

    def __init__(self, number: int, err: BaseException) -> None:
        super().__init__(f"part {number}: {err}")
        self.number = number
        self.err = err


def _etag_is_md5(resp: dict[str, Any], etag: str) -> bool:
    """S3 ETags are the body's MD5 except with SSE-KMS/SSE-C (and for multipart objects)."""
    if resp.get("SSEKMSKeyId") or resp.get("SSECustomerAlgorithm"):
        return False
    if resp.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse"):
        return False
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)
