"""Stream a tool's stdout into one stored object: compress, encrypt, hash, write; commit only on success.

Shared by physical backups and logical dumps: the object is committed only if the
tool exited 0, printed its success marker (on stderr, or at the end of its stdout for
dump tools), and the bytes stored are the bytes written. Otherwise the write is
aborted and nothing is visible.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .codec import CallableSink, Stage, _CompressStage, encode_chain
from .config import ThrottleSettings
from .errors import BackupPipelinesError, StorageError, ToolError, tail
from .handoff import Handoff
from .process import Tool, describe, enlarge_pipe
from .scheduling import lower_session, run_lowered
from .session import Session

READ_SIZE = 1024 * 1024
TAIL_BYTES = 512
RING = 8  # read-ahead buffers of READ_SIZE: bounds memory to ~8 MiB
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Streamed:
    key: str
    size: int
    sha256: str
    source_size: int
    stderr: str


def pump(
    tool: Tool,
    write: Callable[[memoryview], object],
    progress: Progress | None,
    keep_tail: bytearray | None = None,
    rate: int | None = None,
) -> int:
    """Copy the tool's stdout into `write`; return the byte count. Keeps the last bytes if asked.

    A reader thread drains the pipe into a small ring of buffers while this thread
    compresses, encrypts and writes, so the producer never waits on our processing (up
    to RING buffers ahead), as it would not wait on `| zstd`. With a `rate` (bytes/s) this
    thread sleeps whenever it is ahead of it; the full ring and then the full pipe make
    the tool wait too, so the tool reads the datadir no faster than the rate.
    """
    assert tool.proc.stdout is not None
    out = tool.proc.stdout
    enlarge_pipe(out)
    readinto = getattr(out, "raw", out).readinto
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(RING):
        free.put(bytearray(READ_SIZE))
    filled: queue.Queue[tuple[bytearray, int] | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                buf = free.get()
                n = readinto(buf)
                if not n:
                    filled.put(None)
                    return
                filled.put((buf, n))
        except BaseException as err:  # handed to the consumer, which raises it
            filled.put(err)

    thread = threading.Thread(target=reader, name="pump-reader", daemon=True)
    thread.start()
    total = 0
    t0 = time.monotonic()
    try:
        while True:
            item = filled.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            view = memoryview(buf)[:n]
            write(view)
            total += n
            if keep_tail is not None:
                keep_tail += view[max(0, n - TAIL_BYTES) :]
                del keep_tail[:-TAIL_BYTES]
            del view
            free.put(buf)
            if progress:
                progress(total)
            if rate:
                ahead = total / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        stop.set()
        free.put(bytearray(1))  # unblock a reader waiting for a buffer
    thread.join(timeout=5)
    return total


def stream_command(
    session: Session,
    cmd: list[str],
    key: str,
    *,
    what: str,
    host: str,
    backup_id: str,
    stderr_marker: str | None = None,
    stdout_marker: bytes | None = None,
    progress: Progress | None = None,
    cwd: Path | None = None,
    size_hint: int | None = None,
    throttle: ThrottleSettings | None = None,
) -> Streamed:
    """Stream `cmd`'s stdout into the object `key`, under the host's `throttle` if given (see pump and
    scheduling: a stream rate, compression threads, and the whole pipeline's nice/ionice).
    `size_hint`: the stored size of the last such object, if any (sizes the upload's parts)."""
    tools: list[Tool] = []

    def work() -> Streamed:
        return _stream_command(
            session,
            cmd,
            key,
            what=what,
            host=host,
            backup_id=backup_id,
            stderr_marker=stderr_marker,
            stdout_marker=stdout_marker,
            progress=progress,
            cwd=cwd,
            size_hint=size_hint,
            throttle=throttle,
            tools=tools,
        )

    if throttle is None or not throttle.lowers_priority:
        return work()
    return run_lowered(throttle, work, cancel=lambda: [t.kill() for t in tools])


def _stream_command(
    session: Session,
    cmd: list[str],
    key: str,
    *,
    what: str,
    host: str,
    backup_id: str,
    stderr_marker: str | None,
    stdout_marker: bytes | None,
    progress: Progress | None,
    cwd: Path | None,
    size_hint: int | None,
    throttle: ThrottleSettings | None,
    tools: list[Tool],
) -> Streamed:
    codec = session.codec
    if throttle is not None and throttle.compression_threads is not None:
        codec = replace(codec, threads=throttle.compression_threads)
    rate = throttle.stream_bytes_per_second if throttle is not None else None
    writer = session.repo.open_writer(key, size_hint=size_hint)
    committed = False
    last = bytearray()
    handoff: Handoff | None = None
    try:
        # Encryption, the digest and the writer run in a thread of their own behind compression
        # (see handoff); the chain is the one encode_chain builds, cut after the compressor.
        store, digest = encode_chain(replace(codec, compression="none"), session.keyring, CallableSink(writer.write))
        head: Stage = store
        if codec.compression == "zstd":
            handoff = Handoff(store)
            head = _CompressStage(codec.level, codec.threads, handoff)
        with Tool(
            cmd,
            what=what,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            cwd=cwd,
            host=host,
            backup_id=backup_id,
        ) as tool:
            tools.append(tool)
            if throttle is not None:
                lower_session(tool.proc.pid, throttle)
            try:
                source_size = pump(tool, head.write, progress, last if stdout_marker else None, rate)
            except BackupPipelinesError as err:
                tool.kill()
                err.host, err.backup_id = err.host or host, err.backup_id or backup_id
                raise
            stderr = tool.check(marker=stderr_marker)
        if stdout_marker is not None and stdout_marker not in last:
            raise ToolError(
                f"{what}: the output does not end with {stdout_marker.decode()!r}: it is incomplete",
                host=host,
                backup_id=backup_id,
                command=describe(cmd),
                stderr_tail=tail(stderr),
                hint="nothing was committed; check the tool's stderr",
            )
        head.finish()
        info = writer.commit()
        committed = True
    finally:
        if not committed:
            if handoff is not None:
                handoff.close()
            writer.abort()
    if info.size != digest.size:
        session.repo.delete([key])
        raise StorageError(
            f"stored object is {info.size} bytes but {digest.size} were written",
            host=host,
            backup_id=backup_id,
            key=session.repo.describe(key),
        )
    return Streamed(key, info.size, digest.sha256, source_size, stderr)
