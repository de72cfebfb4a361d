"""The transform chains between a tool's byte stream and stored objects.

Encode (backup):  raw -> zstd -> encrypt -> sha256 + count -> object writer
Decode (restore): stored -> sha256 + count -> decrypt -> unzstd -> raw sink

Each stage has `write(data)` and `finish()`; finish flushes the stage and then
finishes the next one, so one call at the head seals the whole chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zstandard

from .crypto import SCHEME, Decryptor, Encryptor, Keyring
from .errors import IntegrityError
from .zstd_frames import FrameWalker

Buffer = bytes | bytearray | memoryview
OUT_CHUNK = 1 << 20  # the largest piece a decompressing stage writes downstream


class Stage(Protocol):
    def write(self, data: Buffer) -> int: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class Codec:
    """How objects are transformed: what a manifest records so a reader can undo it."""

    compression: str  # "zstd" | "none"
    encryption: str | None  # crypto.SCHEME or None
    level: int = 3
    threads: int = 0

    @property
    def suffix(self) -> str:
        return (".zst" if self.compression == "zstd" else "") + (".enc" if self.encryption else "")


def codec_for(compression: str, keyring: Keyring, level: int = 3, threads: int = 0) -> Codec:
    return Codec(compression, SCHEME if keyring.enabled else None, level, threads)


class CallableSink:
    """Adapts a plain callable (e.g. a pipe's write) to a Stage."""

    def __init__(self, fn: Callable[[Buffer], object], on_finish: Callable[[], object] | None = None) -> None:
        self._fn = fn
        self._on_finish = on_finish

    def write(self, data: Buffer) -> int:
        self._fn(data)
        return len(data)

    def finish(self) -> None:
        if self._on_finish:
            self._on_finish()


class Digest:
    """Counts and hashes bytes on their way through."""

    def __init__(self, downstream: Stage) -> None:
        self._h = hashlib.sha256()
        self._down = downstream
        self.size = 0

    def write(self, data: Buffer) -> int:
        self._h.update(data)
        self.size += len(data)
        return self._down.write(data)

    def finish(self) -> None:
        self._down.finish()

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()


class _EncryptStage:
    def __init__(self, enc_factory: Callable[[Callable[[Buffer], object]], Encryptor], downstream: Stage) -> None:
        self._down = downstream
        self._enc = enc_factory(downstream.write)

    def write(self, data: Buffer) -> int:
        return self._enc.write(data)

    def finish(self) -> None:
        self._enc.finish()
        self._down.finish()


class _DecryptStage:
    def __init__(self, keyring: Keyring, downstream: Stage, what: str) -> None:
        self._down = downstream
        self._dec = Decryptor(keyring, downstream.write, what=what)

    def write(self, data: Buffer) -> int:
        return self._dec.write(data)

    def finish(self) -> None:
        self._dec.finish()
        self._down.finish()


class _CompressStage:
    def __init__(self, level: int, threads: int, downstream: Stage) -> None:
        self._down = downstream
        cctx = zstandard.ZstdCompressor(level=level, threads=threads if threads else -1)
        self._w = cctx.stream_writer(downstream, write_size=1 << 20, closefd=False)

    def write(self, data: Buffer) -> int:
        self._w.write(data)
        return len(data)

    def finish(self) -> None:
        self._w.flush(zstandard.FLUSH_FRAME)
        self._w.close()
        self._down.finish()


class _ChunkForward:
    """The decompressor's output target: fixed-size chunks, handed straight downstream."""

    def __init__(self, downstream: Stage) -> None:
        self._down = downstream

    def write(self, data: Buffer) -> int:
        self._down.write(data)
        return len(data)


class _DecompressStage:
    """Decompresses in bounded output chunks and insists the stream ended on a complete frame.

    A stream writer emits at most OUT_CHUNK bytes per downstream write whatever the ratio:
    `decompressobj().decompress()` returns a call's whole expansion as one object, and a
    zero-filled tablespace compresses ~30,000:1 (32 KB became one 1 GiB bytes object).
    Frame ends come from `zstd_frames.FrameWalker`, as the stream writer does not report them.
    """

    def __init__(self, downstream: Stage, what: str) -> None:
        self._down = downstream
        self._what = what
        self._frames = FrameWalker()
        self._w = zstandard.ZstdDecompressor().stream_writer(
            _ChunkForward(downstream), write_size=OUT_CHUNK, write_return_read=True, closefd=False
        )

    def write(self, data: Buffer) -> int:
        try:
            self._w.write(data)
        except zstandard.ZstdError as err:
            raise IntegrityError(f"{self._what} is not a valid zstd stream: {err}") from None
        self._frames.feed(data)
        return len(data)

    def finish(self) -> None:
        if not self._frames.at_boundary or self._frames.frames == 0:
            raise IntegrityError(f"{self._what} ends inside a zstd frame: it is truncated")
        self._down.finish()


def encode_chain(codec: Codec, keyring: Keyring, writer: Stage) -> tuple[Stage, Digest]:
    """Head stage to write raw bytes into, and the digest of what reaches `writer`."""
    digest = Digest(writer)
    stage: Stage = digest
    if codec.encryption:
        master = keyring.current
        if master is None:
            raise ValueError("codec wants encryption but the keyring has no current key")
        stage = _EncryptStage(lambda sink: Encryptor(master, sink), stage)
    if codec.compression == "zstd":
        stage = _CompressStage(codec.level, codec.threads, stage)
    return stage, digest


def decode_stages(codec: Codec, keyring: Keyring, sink: Stage, *, what: str) -> Stage:
    """Head stage that undoes `codec` and writes the raw bytes to `sink`."""
    stage: Stage = sink
    if codec.compression == "zstd":
        stage = _DecompressStage(stage, what)
    if codec.encryption:
        stage = _DecryptStage(keyring, stage, what)
    return stage


def decode_chain(codec: Codec, keyring: Keyring, sink: Stage, *, what: str) -> tuple[Stage, Digest]:
    """Head stage to write stored bytes into, and the digest of those stored bytes."""
    digest = Digest(decode_stages(codec, keyring, sink, what=what))
    return digest, digest
