"""Streaming download: one plain GET first, parallel ranged GETs when one connection is too slow.

Why not always split into ranges: a single GET already tells the size, ETag and stored
checksum (no HEAD round trip), streams at full speed from local S3-compatible servers
(and from moto, which re-reads the whole object for every ranged GET), and costs one
request. Why not always one GET: a cloud S3 connection tops out around 100 MB/s.

So: the first GET streams sequentially into the sink; after one part's worth of bytes
the rate of the network reads is measured (time to first byte excluded). If it is
below `sequential_rate` and more than a part remains, `concurrency` workers start
fetching ranges of `part_size` beyond the next part boundary while the first connection
finishes up to that boundary and is closed. Workers read straight into pooled part
buffers (no copies; memory = concurrency x part size) and parts reach the sink in order.
Each range, and the first stream, resumes from the last byte received after a reset, up
to the retry budget. Ranged GETs carry If-Match with the first GET's ETag, so an object
replaced mid-read fails with IntegrityError instead of mixing two versions.

Verification (verify=True): the CRC-32 of the delivered bytes (per part in the workers,
combined in order) is compared at the end with `expected_crc32` (a sidecar record, see
`sidecar.get_stream`) or else with S3's stored whole-object CRC-32 (GET with
ChecksumMode=ENABLED; present for single PUTs and FULL_OBJECT uploads, not COMPOSITE
ones). A mismatch raises IntegrityError after the last byte was delivered, so a
streaming consumer must treat its output as void on that error; a size that differs
from `expected_size` fails before the first byte.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...errors import BackupPipelinesError, IntegrityError, StorageError
from .checksum import crc32, crc32_combine, crc32_from_b64, crc32_to_b64
from .client import S3Client, body_reader, s3_url, storage_error
from .retry import Cancelled, Retryable, RetryPolicy

log = logging.getLogger("backup_pipelines.stream")

MiB = 1024 * 1024
READ_CHUNK = 1 * MiB  # socket reads per call: small enough to notice a cancel promptly


@dataclass(frozen=True)
class DownloadResult:
    size: int
    etag: str
    crc32: int | None = None  # of the bytes delivered, when verify=True
    stored_crc32: int | None = None  # S3's FULL_OBJECT CRC-32, when it has one
    verified_against: str | None = None  # "expected" | "s3-checksum" | None (nothing to compare)


class _Truncated(Retryable):
    """The connection ended before the range did."""


class Download:
    """One object read; iterate `chunks()` or call `read_into(sink)` once."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        s3_key: str,
        *,
        part_size: int = 16 * MiB,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        verify: bool = False,
        expected_crc32: int | None = None,
        expected_size: int | None = None,
        sequential_rate: float = 256 * MiB,
        chunk_size: int = 4 * MiB,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.s3_key = s3_key
        self.part_size = max(1 * MiB, int(part_size))
        self.concurrency = max(1, int(concurrency))
        self.retry = retry or RetryPolicy()
        self.verify = verify or expected_crc32 is not None
        self.expected_crc32 = expected_crc32
        self.expected_size = expected_size
        self.sequential_rate = sequential_rate
        self.chunk_size = max(64 * 1024, min(int(chunk_size), self.part_size))
        self.where = s3_url(bucket, s3_key)
        self.result: DownloadResult | None = None
        self.parallel_from: int | None = None  # offset where ranged GETs took over, if they did
        self._etag = ""
        self._cancel = threading.Event()

    def read_into(self, sink: Callable[[memoryview], object]) -> DownloadResult:
        """Deliver the object in order to `sink` (each view is valid only during the call)."""
        for view in self.chunks():
            sink(view)
        assert self.result is not None
        return self.result

    def chunks(self) -> Iterator[memoryview]:
        """The object's bytes in order, as views into reused buffers (copy what you keep)."""
        try:
            yield from self._chunks()
        except BackupPipelinesError:
            raise
        except Cancelled:
            raise StorageError(f"reading {self.where} was aborted", key=self.where) from None
        except Exception as err:
            raise storage_error(err, action="read", bucket=self.bucket, key=self.s3_key) from None

    # -- the first, sequential stream -----------------------------------------------------

    def _get(self, start: int, end: int | None, *, first: bool = False) -> Any:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.s3_key}
        if not first:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            if self._etag:
                args["IfMatch"] = self._etag
        elif self.verify:
            args["ChecksumMode"] = "ENABLED"
        return self.client.get_object(**args)

    def _chunks(self) -> Iterator[memoryview]:
        resp = self.retry.call(lambda: self._get(0, None, first=True), what=f"get {self.where}", cancel=self._cancel)
        size = int(resp["ContentLength"])
        self._etag = str(resp.get("ETag", ""))
        if self.expected_size is not None and size != self.expected_size:
            resp["Body"].close()
            self._finish(size, 0, None)  # raises before a single byte is delivered
        stored = None
        if self.verify and resp.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            stored = crc32_from_b64(str(resp.get("ChecksumCRC32", "")))
        lane = _Lane(resp["Body"], 0)
        parallel: _Parallel | None = None
        crc = 0
        pos = 0
        boundary = size
        decided = size <= self.part_size
        waited = 0.0
        buf = bytearray(min(self.chunk_size, max(size, 1)))
        view = memoryview(buf)
        try:
            while pos < boundary:
                want = min(len(buf), boundary - pos)
                t0 = time.perf_counter()
                n = self._read_lane(lane, view[:want], pos, size)
                waited += time.perf_counter() - t0
                if self.verify:
                    crc = crc32(view[:n], crc)
                yield view[:n]
                pos += n
                if not decided and pos >= self.part_size:
                    decided = True
                    rate = pos / max(waited, 1e-9)
                    if rate < self.sequential_rate and size - pos > self.part_size:
                        boundary = min(size, pos + self.part_size)
                        log.debug(
                            "%s: %.0f MB/s on one connection, switching to ranged GETs at %d",
                            self.where,
                            rate / 1e6,
                            boundary,
                        )
                        self.parallel_from = boundary
                        parallel = _Parallel(self, boundary, size)
                        parallel.start()
            lane.close()
            if parallel is not None:
                for part_view, part_crc in parallel:
                    if self.verify:
                        crc = crc32_combine(crc, part_crc, len(part_view))
                    yield part_view
                    pos += len(part_view)
        finally:
            self._cancel.set()
            lane.close()
            if parallel is not None:
                parallel.close()
        self._finish(pos, crc, stored)

    def _read_lane(self, lane: _Lane, view: memoryview, pos: int, size: int) -> int:
        """Read into `view` at object offset `pos`, reopening the stream from `pos` on failure.

        The reopening GETs count against the same budget as the reads (no nested retries)."""
        tries = self.retry.attempts(f"reading {self.where}", self._cancel)
        while True:
            try:
                if lane.body is None:
                    lane.reopen(self, pos, size)
                n = lane.readinto(view)
                if not n:
                    raise _Truncated(f"connection closed at byte {pos} of {size}")
                return n
            except Exception as err:
                lane.close()
                try:
                    tries.failed(err, at=f"byte {pos}")
                except Cancelled:
                    raise
                except Exception as final:
                    raise storage_error(
                        final, action=f"read byte {pos} of", bucket=self.bucket, key=self.s3_key, attempts=tries.used
                    ) from None

    def _finish(self, size: int, crc: int, stored: int | None) -> None:
        against = None
        expected = None
        if self.verify:
            if self.expected_crc32 is not None:
                against, expected = "expected", self.expected_crc32
            elif stored is not None:
                against, expected = "s3-checksum", stored
        self.result = DownloadResult(
            size=size,
            etag=self._etag,
            crc32=crc if self.verify else None,
            stored_crc32=stored,
            verified_against=against,
        )
        if self.expected_size is not None and size != self.expected_size:
            raise IntegrityError(
                f"{self.where} has {size} bytes, {self.expected_size} were recorded when it was written",
                key=self.where,
                hint="the object was replaced or truncated after it was written",
            )
        if expected is not None and crc != expected:
            source = "its checksum record" if against == "expected" else "S3's stored checksum"
            raise IntegrityError(
                f"checksum mismatch reading {self.where}: the bytes have CRC-32 {crc32_to_b64(crc)}, "
                f"{source} says {crc32_to_b64(expected)}",
                key=self.where,
                hint="the object was replaced or damaged after it was written: discard this output",
            )


class _Lane:
    """The first GET's body, re-opened at an offset after a failure."""

    def __init__(self, body: Any, start: int) -> None:
        self.body: Any = body
        self.readinto = body_reader(body) if body is not None else _closed_reader
        self.start = start

    def reopen(self, dl: Download, pos: int, size: int) -> None:
        """One ranged GET from `pos` (its failure counts against the caller's budget)."""
        resp = dl._get(pos, size)
        self.body = resp["Body"]
        self.readinto = body_reader(self.body)

    def close(self) -> None:
        body, self.body = self.body, None
        self.readinto = _closed_reader
        if body is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                body.close()


def _closed_reader(view: memoryview) -> int:
    raise _Truncated("stream closed")


class _Parallel:
    """Ranged GETs of [start, end) in part-size pieces, `concurrency` at a time, yielded in order."""

    def __init__(self, dl: Download, start: int, end: int) -> None:
        self.dl = dl
        ps = dl.part_size
        self.ranges = [(s, min(s + ps, end)) for s in range(start, end, ps)]
        self.pool = ThreadPoolExecutor(dl.concurrency, thread_name_prefix="s3-get")
        self.pending: deque[tuple[Future[tuple[int, int]], bytearray]] = deque()
        self.free: list[bytearray] = []
        self.next = 0

    def start(self) -> None:
        while len(self.pending) < self.dl.concurrency and self.next < len(self.ranges):
            buf = self.free.pop() if self.free else bytearray(self.dl.part_size)
            rng = self.ranges[self.next]
            self.pending.append((self.pool.submit(self._fetch, rng[0], rng[1], buf), buf))
            self.next += 1

    def __iter__(self) -> Iterator[tuple[memoryview, int]]:
        while self.pending:
            fut, buf = self.pending.popleft()
            length, part_crc = fut.result()
            yield memoryview(buf)[:length], part_crc
            self.free.append(buf)
            self.start()

    def close(self) -> None:
        self.dl._cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        self.free.clear()

    def _fetch(self, start: int, end: int, buf: bytearray) -> tuple[int, int]:
        """Fill buf with [start, end), resuming after resets; CRC it here, in parallel."""
        dl = self.dl
        length = end - start
        view = memoryview(buf)[:length]
        got = 0
        tries = dl.retry.attempts(f"range {start}-{end - 1} of {dl.where}", dl._cancel)
        while got < length:
            tries.check_cancel()
            body = None
            try:
                resp = dl._get(start + got, end)
                body = resp["Body"]
                if int(resp.get("ContentLength", -1)) != length - got:
                    raise _Truncated(f"asked for {length - got} bytes, got a {resp.get('ContentLength')}-byte body")
                readinto = body_reader(body)
                while got < length:
                    if dl._cancel.is_set():
                        raise Cancelled()
                    n = readinto(view[got : min(length, got + READ_CHUNK)])
                    if not n:
                        raise _Truncated(f"connection closed at byte {start + got}")
                    got += n
            except Cancelled:
                raise
            except Exception as err:
                try:
                    tries.failed(err, at=f"byte {start + got}")
                except Cancelled:
                    raise
                except Exception as final:
                    raise storage_error(
                        final,
                        action=f"read bytes {start}-{end - 1} of",
                        bucket=dl.bucket,
                        key=dl.s3_key,
                        attempts=tries.used,
                    ) from None
            finally:
                if body is not None:
                    with contextlib.suppress(Exception):
                        body.close()
        return length, (crc32(view) if dl.verify else 0)


class ObjectReader(io.RawIOBase):
    """A read-only file over a Download, for code that wants read()/readinto() (one copy per read)."""

    def __init__(self, download: Download) -> None:
        super().__init__()
        self.download = download
        self._chunks = download.chunks()
        self._view: memoryview | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        target = memoryview(b).cast("B")
        while self._view is None or not len(self._view):
            try:
                self._view = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._view))
        target[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._view = None
            self._chunks.close()
        super().close()
