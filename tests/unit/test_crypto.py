"""The bpenc1 stream format: round trips at every boundary, and every kind of tampering fails."""

from __future__ import annotations

import os

import pytest

from backup_pipelines.core.crypto import (
    CHUNK,
    FRAME,
    HEADER_LEN,
    Decryptor,
    Encryptor,
    Keyring,
    decrypt_bytes,
    encrypt_bytes,
    generate_key_text,
    parse_key_text,
    peek_key_id,
)
from backup_pipelines.core.errors import ConfigError, IntegrityError, WrongKeyError

pytestmark = pytest.mark.unit


@pytest.fixture
def key():
    return parse_key_text(generate_key_text())


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17])
def test_round_trip_at_chunk_boundaries(key, size):
    data = os.urandom(size)
    blob = encrypt_bytes(key, data)
    frames = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER_LEN + size + 16 * frames
    assert decrypt_bytes(Keyring(key), blob) == data


def test_streaming_in_odd_pieces(key):
    data = os.urandom(CHUNK * 2 + 12345)
    out: list[bytes] = []
    enc = Encryptor(key, lambda b: out.append(bytes(b)))
    for i in range(0, len(data), 9999):
        enc.write(memoryview(data)[i : i + 9999])
    enc.finish()
    blob = b"".join(out)
    got: list[bytes] = []
    dec = Decryptor(Keyring(key), lambda b: got.append(bytes(b)))
    for i in range(0, len(blob), 7777):
        dec.write(blob[i : i + 7777])
    dec.finish()
    assert b"".join(got) == data


def test_same_plaintext_encrypts_differently(key):
    assert encrypt_bytes(key, b"x" * 100) != encrypt_bytes(key, b"x" * 100)


@pytest.mark.parametrize("where", [HEADER_LEN + 5, HEADER_LEN + FRAME + 3, -1])
def test_flipped_byte_fails(key, where):
    blob = bytearray(encrypt_bytes(key, os.urandom(CHUNK * 2 + 100)))
    blob[where] ^= 0x01
    with pytest.raises(IntegrityError, match="failed authentication"):
        decrypt_bytes(Keyring(key), bytes(blob))


def test_truncation_at_a_frame_boundary_fails(key):
    blob = encrypt_bytes(key, os.urandom(CHUNK * 3))
    with pytest.raises(IntegrityError):
        decrypt_bytes(Keyring(key), blob[: HEADER_LEN + 2 * FRAME])
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt_bytes(Keyring(key), blob[: HEADER_LEN - 1])


def test_reordered_frames_fail(key):
    blob = encrypt_bytes(key, os.urandom(CHUNK * 3))
    h, f1, f2 = (
        blob[:HEADER_LEN],
        blob[HEADER_LEN : HEADER_LEN + FRAME],
        blob[HEADER_LEN + FRAME : HEADER_LEN + 2 * FRAME],
    )
    rest = blob[HEADER_LEN + 2 * FRAME :]
    with pytest.raises(IntegrityError):
        decrypt_bytes(Keyring(key), h + f2 + f1 + rest)


def test_wrong_key_names_both_key_ids(key):
    other = parse_key_text(generate_key_text())
    blob = encrypt_bytes(key, b"secret data")
    assert peek_key_id(blob) == key.key_id
    with pytest.raises(WrongKeyError) as err:
        decrypt_bytes(Keyring(other), blob, what="manifest m")
    assert key.key_id in str(err.value) and other.key_id in str(err.value)
    assert "decryption_key_files" in str(err.value)


def test_rotated_keyring_reads_old_objects(key):
    new = parse_key_text(generate_key_text())
    old_blob = encrypt_bytes(key, b"old")
    assert decrypt_bytes(Keyring(new, [key]), old_blob) == b"old"


def test_key_text_is_validated_and_never_printed(key):
    with pytest.raises(ConfigError):
        parse_key_text("not a key")
    with pytest.raises(ConfigError):
        parse_key_text("bpkey1:AAAA")
    assert key.secret.hex() not in repr(key) and key.key_id in repr(key)
