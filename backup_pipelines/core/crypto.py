"""Streaming authenticated encryption for everything the repository stores.

Format (`bpenc1`), chosen so a stream of unknown length can be encrypted and
decrypted in bounded memory and any truncation, reordering or flipped byte fails:

    header  = b"BPENC\\x01" | key_id (8) | salt (16)
    frames  = AES-256-GCM(chunk_i) for fixed-size plaintext chunks, the last one
              possibly short (or empty) and flagged as last in its nonce

The per-object key is HKDF-SHA256(master key, salt), so nonces (a frame counter
plus the last-frame flag, as in the STREAM construction) never repeat under one
key. The header is every frame's associated data, binding key id and salt.
`key_id` names the master key (a hash of it, not the key) so a reader can say
"encrypted with key X, you gave key Y" instead of a bare authentication failure.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigError, IntegrityError, WrongKeyError

MAGIC = b"BPENC\x01"
KEY_ID_LEN = 8
SALT_LEN = 16
HEADER_LEN = len(MAGIC) + KEY_ID_LEN + SALT_LEN
TAG_LEN = 16
CHUNK = 1024 * 1024
FRAME = CHUNK + TAG_LEN
KEY_PREFIX = "bpkey1:"
SCHEME = "aes-256-gcm-stream-v1"
_HKDF_INFO = b"backup-pipelines/aes-256-gcm-stream/v1"

Sink = Callable[[bytes | memoryview], object]


@dataclass(frozen=True)
class MasterKey:
    secret: bytes
    source: str = "<memory>"

    @property
    def key_id(self) -> str:
        return key_id_of(self.secret)

    def __repr__(self) -> str:  # never show the secret
        return f"MasterKey(key_id={self.key_id}, source={self.source})"


def key_id_of(secret: bytes) -> str:
    return hashlib.sha256(b"backup-pipelines key id\0" + secret).digest()[:KEY_ID_LEN].hex()


def generate_key_text() -> str:
    """A new master key in the text form `keygen` prints and key files hold."""
    return KEY_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def parse_key_text(text: str, source: str = "<key>") -> MasterKey:
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise ConfigError(
            f"{source} is not a backup-pipelines key (expected a line starting {KEY_PREFIX!r})",
            hint="generate one with `backup-pipelines keygen > FILE && chmod 600 FILE`",
        )
    body = text[len(KEY_PREFIX) :]
    try:
        secret = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise ConfigError(f"{source} does not hold a 256-bit key", hint="regenerate it with `keygen`")
    return MasterKey(secret, source)


def load_key_file(path: Path) -> MasterKey:
    from .config import read_secret_file

    return parse_key_text(read_secret_file(path, "encryption key"), str(path))


class Keyring:
    """The key new objects are written with, plus older keys still accepted for reading."""

    def __init__(self, current: MasterKey | None, older: Iterable[MasterKey] = ()) -> None:
        self.current = current
        self._by_id: dict[str, MasterKey] = {}
        for k in [*([current] if current else []), *older]:
            self._by_id.setdefault(k.key_id, k)

    @property
    def enabled(self) -> bool:
        return self.current is not None

    @property
    def has_keys(self) -> bool:
        return bool(self._by_id)

    def lookup(self, key_id: str, *, what: str) -> MasterKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            known = ", ".join(self._by_id) or "none"
            raise WrongKeyError(
                f"{what} was encrypted with key id {key_id}, but the configured keys are: {known}",
                hint="configure the key that wrote this backup as encryption_key_file or "
                "in decryption_key_files (kept after a key rotation)",
            ) from None

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self._by_id)})"


def _derive(master: MasterKey, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO)
    return AESGCM(hkdf.derive(master.secret))


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class Encryptor:
    """Push plaintext with write(); ciphertext goes to `sink` in order; finish() seals."""

    def __init__(self, master: MasterKey, sink: Sink) -> None:
        salt = os.urandom(SALT_LEN)
        self._header = MAGIC + bytes.fromhex(master.key_id) + salt
        self._aead = _derive(master, salt)
        self._sink = sink
        self._buf = bytearray()
        self._counter = 0
        self._finished = False
        sink(self._header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        buf = self._buf
        buf += data
        # Keep at least one byte back so the final frame is always the flagged one.
        if len(buf) > CHUNK:
            off = 0
            while len(buf) - off > CHUNK:
                self._emit(memoryview(buf)[off : off + CHUNK], last=False)
                off += CHUNK
            del buf[:off]
        return n

    def _emit(self, chunk: bytes | memoryview, *, last: bool) -> None:
        self._sink(self._aead.encrypt(_nonce(self._counter, last), bytes(chunk), self._header))
        self._counter += 1

    def finish(self) -> None:
        if self._finished:
            return
        self._emit(bytes(self._buf), last=True)
        self._buf = bytearray()
        self._finished = True


class Decryptor:
    """Push ciphertext with write(); verified plaintext goes to `sink`; finish() checks the end."""

    def __init__(self, keyring: Keyring, sink: Sink, *, what: str = "object") -> None:
        self._keyring = keyring
        self._sink = sink
        self._what = what
        self._buf = bytearray()
        self._aead: AESGCM | None = None
        self._header = b""
        self._counter = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        buf = self._buf
        buf += data
        if self._aead is None:
            if len(buf) < HEADER_LEN:
                return n
            self._read_header(bytes(buf[:HEADER_LEN]))
            del buf[:HEADER_LEN]
        if len(buf) > FRAME:
            off = 0
            while len(buf) - off > FRAME:
                self._open(memoryview(buf)[off : off + FRAME], last=False)
                off += FRAME
            del buf[:off]
        return n

    def _read_header(self, header: bytes) -> None:
        if not header.startswith(MAGIC):
            raise IntegrityError(
                f"{self._what} is not encrypted with a backup-pipelines key (bad header)",
                hint="it may have been written without encryption: remove encryption_key_file "
                "to read it, or the object is corrupt",
            )
        key_id = header[len(MAGIC) : len(MAGIC) + KEY_ID_LEN].hex()
        master = self._keyring.lookup(key_id, what=self._what)
        self._aead = _derive(master, header[len(MAGIC) + KEY_ID_LEN :])
        self._header = header

    def _open(self, frame: bytes | memoryview, *, last: bool) -> None:
        assert self._aead is not None
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), bytes(frame), self._header)
        except InvalidTag:
            raise IntegrityError(
                f"{self._what} failed authentication at frame {self._counter}: it was modified, truncated or corrupted",
                hint="do not use this object; restore from an earlier backup or the offsite copy",
            ) from None
        self._counter += 1
        if plain:
            self._sink(plain)

    def finish(self) -> None:
        if self._aead is None:
            raise IntegrityError(f"{self._what} is truncated: shorter than the encryption header")
        if len(self._buf) < TAG_LEN:
            raise IntegrityError(f"{self._what} is truncated: its final frame is missing")
        self._open(bytes(self._buf), last=True)
        self._buf = bytearray()


def peek_key_id(data: bytes) -> str | None:
    """The key id in an encrypted object's header, or None if it is not encrypted."""
    if len(data) >= HEADER_LEN and data.startswith(MAGIC):
        return data[len(MAGIC) : len(MAGIC) + KEY_ID_LEN].hex()
    return None


def encrypt_bytes(master: MasterKey, data: bytes) -> bytes:
    out: list[bytes] = []
    enc = Encryptor(master, lambda b: out.append(bytes(b)))
    enc.write(data)
    enc.finish()
    return b"".join(out)


def decrypt_bytes(keyring: Keyring, data: bytes, *, what: str = "object") -> bytes:
    out: list[bytes] = []
    dec = Decryptor(keyring, lambda b: out.append(bytes(b)), what=what)
    dec.write(data)
    dec.finish()
    return b"".join(out)
