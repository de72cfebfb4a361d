"""PipeFeeder: the queue in front of a restore tool's stdin is bounded by bytes, not chunks."""

from __future__ import annotations

import os
import threading
import time

import pytest

from backup_pipelines.core.process import PipeFeeder

pytestmark = pytest.mark.unit


def test_queued_bytes_stay_under_the_budget_whatever_the_chunk_size():
    r, w = os.pipe()
    got = bytearray()

    def slow_reader() -> None:
        with os.fdopen(r, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                got.extend(chunk)
                time.sleep(0.0005)

    t = threading.Thread(target=slow_reader)
    t.start()
    feeder = PipeFeeder(os.fdopen(w, "wb"), max_bytes=4 * 1024 * 1024)
    sent = 0
    for i in range(24):
        chunk = bytes([i]) * (3 * 1024 * 1024 if i % 2 else 256 * 1024)
        feeder.write(chunk)
        sent += len(chunk)
        assert feeder.queued <= 4 * 1024 * 1024
    feeder.finish()
    t.join()
    assert len(got) == sent
    assert feeder.peak_queued <= 4 * 1024 * 1024
    assert feeder.peak_queued >= 3 * 1024 * 1024  # the budget was actually used: the reader was slower


def test_a_dead_reader_surfaces_as_broken_pipe_and_never_blocks_the_producer():
    r, w = os.pipe()
    os.close(r)
    feeder = PipeFeeder(os.fdopen(w, "wb"), max_bytes=1024 * 1024)
    with pytest.raises(BrokenPipeError):
        for _ in range(100):
            feeder.write(bytes(512 * 1024))
        feeder.finish()
