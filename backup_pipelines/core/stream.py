"""`stream put` / `stream get`: the uploader as a pipeline tool (what gof3r was), on the same code.

put: stdin, or the stdout of a producer command run by us (`-- cmd args`), optionally
     through the repository's zstd + AES-256-GCM, into one S3 object plus its checksum
     record. With a producer, its exit status decides: non-zero (or killed) aborts the
     upload, so a failed producer never leaves an object behind. Plain stdin cannot tell
     a dead producer from a finished one; use the producer form in pipelines.
get: the object, verified and optionally decrypted/decompressed, to stdout. A checksum
     mismatch is reported after the bytes are written (they have been streamed), with
     an exit status that says the output must not be trusted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from .codec import CallableSink, Codec, decode_stages, encode_chain
from .crypto import Keyring
from .errors import IntegrityError, ToolError, tail
from .process import Tool, enlarge_pipe
from .repository.s3 import MultipartUpload, RetryPolicy, S3Client, UploadInfo, get_stream, parse_s3_url
from .repository.s3.sidecar import write_checksum_record

MiB = 1024 * 1024


@dataclass(frozen=True)
class PutResult:
    url: str
    size: int  # stored bytes
    source_size: int
    crc32: int | None
    parts: int
    seconds: float


def put(
    client: S3Client,
    url: str,
    *,
    codec: Codec,
    keyring: Keyring,
    producer: list[str] | None = None,
    stdin: BinaryIO | None = None,
    part_size: int = 16 * MiB,
    concurrency: int = 8,
    retry: RetryPolicy | None = None,
    progress: Callable[[int], None] | None = None,
) -> PutResult:
    import time

    bucket, key = parse_s3_url(url, object_key=True)
    t0 = time.monotonic()
    tool: Tool | None = None
    if producer:
        tool = Tool(producer, what="stream put producer", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert tool.proc.stdout is not None
        source = tool.proc.stdout
    else:
        source = stdin or sys.stdin.buffer
    enlarge_pipe(source)
    raw = getattr(source, "raw", source)
    counted = 0

    def readinto(buf: memoryview) -> int:
        nonlocal counted
        n = raw.readinto(buf) or 0
        counted += n
        if progress:
            progress(counted)
        return n

    try:
        info = _put(client, bucket, key, readinto, tool, codec, keyring, part_size, concurrency, retry)
    finally:
        if tool is not None:
            tool.close()
    return PutResult(url, info.size, counted, info.crc32, info.parts, round(time.monotonic() - t0, 3))


def _check_producer(tool: Tool | None) -> None:
    if tool is None:
        return
    rc = tool.wait()
    if rc != 0:
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
        raise ToolError(
            f"the producer {how}; the upload was aborted and no object was written",
            command=" ".join(tool.cmd),
            stderr_tail=tail(tool.stderr_text()),
        )


def _put(
    client: S3Client,
    bucket: str,
    key: str,
    readinto: Callable[[memoryview], int],
    tool: Tool | None,
    codec: Codec,
    keyring: Keyring,
    part_size: int,
    concurrency: int,
    retry: RetryPolicy | None,
) -> UploadInfo:
    up = MultipartUpload(client, bucket, key, part_size=part_size, concurrency=concurrency, retry=retry)
    with up:  # any exception below aborts the upload
        if not codec.encryption and codec.compression == "none":
            up.write_from(readinto)  # part buffers filled straight from the pipe: no copy
            head = None
        else:
            head, _ = encode_chain(codec, keyring, CallableSink(up.write))
            buf = bytearray(MiB)
            view = memoryview(buf)
            while n := readinto(view):
                head.write(view[:n])
        _check_producer(tool)  # before commit: a failed producer must never yield an object
        if head is not None:
            head.finish()
        info = up.commit()
    write_checksum_record(client, bucket, key, info, retry)
    return info


def get(
    client: S3Client,
    url: str,
    out: BinaryIO,
    *,
    codec: Codec,
    keyring: Keyring,
    part_size: int = 16 * MiB,
    concurrency: int = 8,
    retry: RetryPolicy | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the object (decoded) to `out`; IntegrityError at the end if its checksum does not match."""
    bucket, key = parse_s3_url(url, object_key=True)
    raw_out = getattr(out, "raw", out)

    def write_all(data: memoryview | bytes) -> None:
        view = memoryview(data)
        while len(view):
            n = raw_out.write(view)
            view = view[n:]

    sink = CallableSink(write_all)
    head = decode_stages(codec, keyring, sink, what=url) if (codec.encryption or codec.compression != "none") else sink
    write = head.write
    done = 0

    # Integrity is the downloader's CRC-32 against the checksum record; no second hash here.
    def feed(chunk: memoryview) -> None:
        nonlocal done
        write(chunk)
        done += len(chunk)
        if progress:
            progress(done)

    try:
        result = get_stream(
            client, bucket, key, feed, part_size=part_size, concurrency=concurrency, retry=retry, verify=True
        )
    except IntegrityError as err:
        err.hint = "the bytes written to the output must not be trusted: " + (err.hint or "discard them")
        raise
    head.finish()
    if result.verified_against is None:
        print(
            f"backup-pipelines: warning: {url} has no checksum record; its integrity was not verified", file=sys.stderr
        )
    return done
