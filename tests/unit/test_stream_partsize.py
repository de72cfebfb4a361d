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
    n = next(n for n in range(1, MAX_PARTS + 1) if sizer.capacity(n) >= 1024 * GiB)
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
