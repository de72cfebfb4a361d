"""The handoff between two stages: order kept, errors surface, drain waits, abort drops."""

from __future__ import annotations

import threading

import pytest

from backup_pipelines.core.errors import StorageError
from backup_pipelines.core.handoff import DEPTH, Handoff

pytestmark = pytest.mark.unit


class Collect:
    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.chunks: list[bytes] = []
        self.finished = False
        self.threads: set[str] = set()
        self.fail_at = fail_at
        self.gate = gate

    def write(self, data) -> int:
        if self.gate is not None:
            self.gate.wait(10)
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise StorageError("disk full", key="k")
        self.chunks.append(bytes(data))
        return len(data)

    def finish(self) -> None:
        self.finished = True


def test_chunks_arrive_in_order_from_another_thread_and_reused_buffers_are_copied():
    sink = Collect()
    h = Handoff(sink)
    buf = bytearray(4)
    for i in range(100):
        buf[:] = i.to_bytes(4, "big")
        h.write(memoryview(buf))  # the caller reuses its buffer at once
    h.finish()
    assert sink.chunks == [i.to_bytes(4, "big") for i in range(100)]
    assert sink.finished and sink.threads == {"store"}


def test_a_downstream_error_is_raised_to_the_producer_and_nothing_is_finished():
    sink = Collect(fail_at=3)
    h = Handoff(sink)
    with pytest.raises(StorageError, match="disk full"):
        for _ in range(10 * DEPTH):
            h.write(b"x" * 10)
        h.finish()
    assert not sink.finished and len(sink.chunks) == 3


def test_close_drops_what_is_queued_and_releases_a_blocked_producer():
    gate = threading.Event()
    sink = Collect(gate=gate)
    h = Handoff(sink)
    for _ in range(DEPTH):
        h.write(b"y")
    gate.set()
    h.close()
    assert not sink.finished and len(sink.chunks) <= DEPTH


def test_drain_delivers_everything_without_finishing_and_raises_what_downstream_hit():
    sink = Collect()
    h = Handoff(sink, name="decode")
    for i in range(3 * DEPTH):
        h.write(bytes([i]))
    h.drain()
    assert len(sink.chunks) == 3 * DEPTH and not sink.finished and sink.threads == {"decode"}
    h.finish()  # after a drain, finish only finishes downstream
    assert sink.finished

    failing = Collect(fail_at=1)
    h = Handoff(failing)
    h.write(b"a")
    h.write(b"b")
    with pytest.raises(StorageError, match="disk full"):
        h.drain()
    assert not failing.finished
