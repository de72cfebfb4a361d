"""A stage boundary with a thread behind it, as a pipe is between two processes of a shell pipeline.

`mariabackup | zstd | openssl | sha256sum` runs each stage in its own process: when one is
descheduled or waits on the disk, the others keep working on what the pipes hold. In one
thread, our chain compresses, encrypts, hashes and writes one chunk after the other, so any
stall stops every stage, and on a busy machine the stalls add up. Handing the compressed
chunks to a second thread through a short queue lets compression (zstd's workers release the
GIL) overlap encryption, hashing and writing (AES-GCM, hashlib and file writes release it too).
On restore the same boundary lets the sha256 of the stored bytes (in the reading thread)
overlap their decryption and decompression.
"""

from __future__ import annotations

import queue
import threading

from .codec import Buffer, Stage

DEPTH = 8  # chunks in flight; zstd hands over at most 1 MiB at a time, so at most ~8 MiB


class Handoff:
    """write() queues a chunk for `downstream` and returns; finish() drains it and finishes `downstream`.

    An error downstream is raised from the next write() or from finish(); close() stops the
    thread without finishing `downstream` (the object is being aborted).
    """

    def __init__(self, downstream: Stage, *, name: str = "store") -> None:
        self._down = downstream
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=DEPTH)
        self._error: BaseException | None = None
        self._discard = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None or self._discard:
                continue  # drain, so a writer blocked on a full queue is released
            try:
                self._down.write(chunk)
            except BaseException as err:  # handed to the producer, which raises it
                self._error = err

    def write(self, data: Buffer) -> int:
        if self._error is not None:
            raise self._error
        chunk = data if isinstance(data, bytes) else bytes(data)  # the caller may reuse its buffer
        self._queue.put(chunk)
        return len(chunk)

    def drain(self) -> None:
        """Wait until every queued chunk reached `downstream` (the thread ends); raise its error, if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        self.drain()
        self._down.finish()

    def close(self, timeout: float = 30) -> None:
        """Stop without finishing downstream; what is still queued is dropped."""
        if self._thread.is_alive():
            self._discard = True
            self._queue.put(None)
            self._thread.join(timeout)
