"""Part sizes for streams of unknown length: S3's 10,000-part and 5 TiB limits, without moving data."""

from __future__ import annotations

import pytest

from backup_pipelines.core.repository.s3.upload import (
    FLAT_PARTS,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    PartSizer,
)

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
GiB = 1024 * MiB


def _parts_for(sizer: PartSizer, size: int) -> int:
    """How many parts a stream of `size` bytes takes."""
    total = 0
    for n in range(1, MAX_PARTS + 1):
        total += sizer.size(n)
        if total >= size:
            return n
    raise AssertionError("does not fit")


@pytest.mark.parametrize(
    "part_size",
    [1, 5 * MiB, 8 * MiB, 16 * MiB, 64 * MiB, 100 * MiB + 3, 524 * MiB, 600 * MiB, 5 * GiB, 6 * GiB],
)
def test_ten_thousand_parts_always_reach_five_tib(part_size):
    sizer = PartSizer(part_size)
    sizes = [sizer.size(n) for n in range(1, MAX_PARTS + 1)]
    assert sum(sizes) >= MAX_OBJECT_SIZE
    assert sum(sizes) == sizer.capacity()
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in sizes)
    assert sizes == sorted(sizes), "part sizes never shrink"
    assert sizes[0] == sizes[FLAT_PARTS - 1] == max(min(part_size, MAX_PART_SIZE), MIN_PART_SIZE)


def test_growth_is_gentle():
    """Linear growth keeps the largest part far below S3's 5 GiB, so memory stays sane."""
    sizer = PartSizer(16 * MiB)
    assert sizer.size(MAX_PARTS) < 1300 * MiB
    # 16 GiB (1000 parts) fits without any growth.
    assert sizer.capacity(FLAT_PARTS) == 16_000 * MiB
    # Where a 1 TiB stream ends, parts are ~0.5 GiB: that is what (concurrency + 1) buffers cost then.
    n = _parts_for(sizer, 1024 * GiB)
    assert sizer.size(n) < 600 * MiB


def test_size_hint_raises_the_base_so_the_hint_fits_in_flat_parts():
    sizer = PartSizer(5 * MiB, size_hint=2 * 1024 * GiB)
    assert sizer.base >= 2 * 1024 * GiB / MAX_PARTS
    assert sizer.base % MiB == 0
    assert sizer.capacity() >= MAX_OBJECT_SIZE
    # A small hint does not shrink the configured part size.
    assert PartSizer(16 * MiB, size_hint=100).base == 16 * MiB


def test_part_numbers_outside_the_s3_range_are_refused():
    sizer = PartSizer(5 * MiB)
    with pytest.raises(ValueError):
        sizer.size(0)
    with pytest.raises(ValueError):
        sizer.size(MAX_PARTS + 1)


def test_grown_parts_come_in_runs_of_one_size_so_buffers_are_recycled():
    from backup_pipelines.core.repository.s3.upload import TIER

    sizer = PartSizer(16 * MiB)
    grown = [sizer.size(n) for n in range(FLAT_PARTS + 1, MAX_PARTS + 1)]
    assert all((s - sizer.base) % TIER == 0 for s in grown)
    assert len(set(grown)) < len(grown) / 50  # ~100 parts share each size


def test_a_size_hint_keeps_a_stream_of_the_expected_size_from_growing():
    from backup_pipelines.core.repository.s3.upload import HINT_MARGIN, HINTED_FLAT_PARTS

    hint = 1024 * GiB
    sizer = PartSizer(16 * MiB, size_hint=hint)
    assert sizer.capacity(HINTED_FLAT_PARTS) >= hint * HINT_MARGIN
    assert sizer.size(HINTED_FLAT_PARTS) == sizer.base < 160 * MiB
    # Without the hint, the same 1 TiB stream ends on parts over three times as large.
    plain = PartSizer(16 * MiB)
    n = _parts_for(plain, hint)
    assert plain.size(n) > 3 * sizer.base


def test_the_buffer_pool_never_holds_more_than_its_budget():
    import threading

    from backup_pipelines.core.repository.s3.upload import BufferPool

    pool = BufferPool(4 * MiB)
    cancel = threading.Event()
    a = pool.take(MiB, cancel)
    b = pool.take(2 * MiB, cancel)
    got: list[bytearray] = []
    t = threading.Thread(target=lambda: got.append(pool.take(2 * MiB, cancel)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and pool.allocated == 3 * MiB  # 5 MiB would exceed the budget: it waits
    pool.give(a, MiB)
    t.join(5)
    assert got and pool.allocated == 4 * MiB
    pool.give(b, 2 * MiB)
    assert pool.take(2 * MiB, cancel) is b  # recycled, not reallocated
    pool.give(b, 2 * MiB)
    pool.give(got[0], 2 * MiB)
    big = pool.take(10 * MiB, cancel)  # idle buffers of the old size are freed; one oversized part alone is allowed
    assert pool.allocated == 10 * MiB == len(big)
    assert pool.peak == 10 * MiB
