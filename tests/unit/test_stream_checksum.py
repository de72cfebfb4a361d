"""CRC-32 combination, S3's base64 form, and the sidecar checksum record."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipelines.core.repository.s3.checksum import (
    ChecksumRecord,
    crc32,
    crc32_combine,
    crc32_from_b64,
    crc32_to_b64,
    sidecar_key,
)

pytestmark = pytest.mark.unit


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=6))
def test_combined_part_crcs_equal_the_crc_of_the_whole(parts):
    total = 0
    for p in parts:
        total = crc32_combine(total, crc32(p), len(p))
    assert total == zlib.crc32(b"".join(parts))


def test_crc32_matches_zlib_and_accepts_views():
    data = bytes(range(256)) * 1000
    assert crc32(memoryview(data)[10:]) == zlib.crc32(data[10:])
    assert crc32(data[5:], crc32(data[:5])) == zlib.crc32(data)


def test_base64_form_matches_s3():
    # S3 reports CRC32 as base64 of the big-endian 4 bytes: crc32(b"hello") == 0x3610a686.
    assert crc32_to_b64(zlib.crc32(b"hello")) == "NhCmhg=="
    assert crc32_from_b64("NhCmhg==") == 0x3610A686
    assert crc32_from_b64("NhCmhg==-3") is None  # composite checksums are not whole-object CRCs
    assert crc32_from_b64("not base64!") is None
    assert crc32_from_b64("") is None


def test_checksum_record_roundtrip_and_validation():
    rec = ChecksumRecord(size=12, crc32=0xDEADBEEF, etag='"abc-2"')
    assert ChecksumRecord.from_json(rec.to_json()) == rec
    with pytest.raises(ValueError):
        ChecksumRecord.from_json(b'{"algorithm": "sha1", "size": 1}')
    with pytest.raises(ValueError):
        ChecksumRecord.from_json(b'{"algorithm": "crc32", "size": 1, "crc32": "bad"}')
    assert sidecar_key("a/b") == "a/b.checksum.json"
