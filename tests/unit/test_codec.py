"""Encode/decode chains: every combination round-trips; truncation and garbage are caught."""

from __future__ import annotations

import os

import pytest

from backup_pipelines.core.codec import CallableSink, codec_for, decode_chain, encode_chain
from backup_pipelines.core.crypto import Keyring, generate_key_text, parse_key_text
from backup_pipelines.core.errors import IntegrityError

pytestmark = pytest.mark.unit


def _encode(codec, keyring, data, piece=65536):
    stored: list[bytes] = []
    head, digest = encode_chain(codec, keyring, CallableSink(lambda b: stored.append(bytes(b))))
    for i in range(0, len(data), piece):
        head.write(memoryview(data)[i : i + piece])
    head.finish()
    blob = b"".join(stored)
    assert digest.size == len(blob)
    return blob, digest.sha256


def _decode(codec, keyring, blob, piece=50000):
    out: list[bytes] = []
    head, digest = decode_chain(codec, keyring, CallableSink(lambda b: out.append(bytes(b))), what="obj")
    for i in range(0, len(blob), piece):
        head.write(blob[i : i + piece])
    head.finish()
    return b"".join(out), digest.sha256


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("encrypted", [True, False])
@pytest.mark.parametrize("size", [0, 1, 3 * 1024 * 1024 + 7])
def test_round_trip(compression, encrypted, size):
    keyring = Keyring(parse_key_text(generate_key_text()) if encrypted else None)
    codec = codec_for(compression, keyring)
    data = os.urandom(size // 2) + bytes(size - size // 2)
    blob, sha = _encode(codec, keyring, data)
    got, sha2 = _decode(codec, keyring, blob)
    assert got == data and sha == sha2
    assert codec.suffix == (".zst" if compression == "zstd" else "") + (".enc" if encrypted else "")
    if compression == "zstd" and size > 1000:
        assert len(blob) < size  # half the input is zeros


def test_truncated_zstd_stream_is_an_integrity_error():
    keyring = Keyring(None)
    codec = codec_for("zstd", keyring)
    blob, _ = _encode(codec, keyring, os.urandom(200000))
    with pytest.raises(IntegrityError, match="truncated"):
        _decode(codec, keyring, blob[:-10])


def test_garbage_is_not_a_zstd_stream():
    codec = codec_for("zstd", Keyring(None))
    with pytest.raises(IntegrityError, match="zstd"):
        _decode(codec, Keyring(None), b"\x00" * 1000)


def test_a_highly_compressed_stream_decodes_in_bounded_chunks():
    """32 KB of compressed zeros must not come back as one huge object (a zero-filled tablespace)."""
    import zstandard

    from backup_pipelines.core.codec import OUT_CHUNK

    blob = zstandard.ZstdCompressor(level=3).compress(bytes(256 * 1024 * 1024))
    assert len(blob) < 64 * 1024
    sizes: list[int] = []
    keyring = Keyring(None)
    head, _ = decode_chain(codec_for("zstd", keyring), keyring, CallableSink(lambda b: sizes.append(len(b))), what="z")
    head.write(blob)
    head.finish()
    assert sum(sizes) == 256 * 1024 * 1024
    assert max(sizes) <= OUT_CHUNK


def test_frame_walker_finds_every_frame_end_and_nothing_else():
    import zstandard

    from backup_pipelines.core.zstd_frames import FrameWalker

    c = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    frames = [c.compress(os.urandom(300_000)), skippable, c.compress(b""), c.compress(bytes(70_000))]
    stream = b"".join(frames)
    ends = set()
    pos = 0
    for f in frames:
        pos += len(f)
        ends.add(pos)
    for cut in sorted({*ends, *range(0, len(stream), 997), len(stream) - 1}):
        w = FrameWalker()
        for i in range(0, cut, 4093):  # feeds that split headers too
            w.feed(stream[i : min(cut, i + 4093)])
        assert w.at_boundary == (cut in ends or cut == 0), cut
    w = FrameWalker()
    w.feed(stream)
    assert w.frames == 4


def test_a_stream_cut_after_a_whole_frame_but_inside_the_next_is_truncated():
    import zstandard

    keyring = Keyring(None)
    codec = codec_for("zstd", keyring)
    c = zstandard.ZstdCompressor(level=1)
    first, second = c.compress(os.urandom(1000)), c.compress(os.urandom(200_000))
    with pytest.raises(IntegrityError, match="truncated"):
        _decode(codec, keyring, first + second[: len(second) // 2])
    got, _ = _decode(codec, keyring, first + second)
    assert len(got) == 201_000
