"""The storage driver interface: one small set of byte-level operations.

Commands (backup, restore, prune) never know which driver they talk to; they see
keys relative to the repository root. Compression, encryption and checksums are
applied above this layer, so a driver only moves opaque bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None


class ObjectWriter(Protocol):
    """A streaming writer. Nothing is visible under `key` until `commit()` returns."""

    key: str

    def write(self, data: Buffer) -> int: ...

    def commit(self) -> ObjectInfo: ...

    def abort(self) -> None: ...


class Repository(ABC):
    """A flat key space of immutable objects."""

    url: str

    @abstractmethod
    def open_writer(self, key: str, *, size_hint: int | None = None) -> ObjectWriter:
        """Start writing `key`; the object appears atomically on commit, never partially."""

    @abstractmethod
    def read_into(self, key: str, sink: Callable[[memoryview], object]) -> int:
        """Stream the object's bytes, in order, into `sink`; return the byte count."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole (manifests, verification records)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object atomically."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Committed objects under `prefix` (partial writes are never listed)."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects; missing keys are not an error."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime of `key`, or None where it does not exist."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def list_dirs(self, prefix: str) -> list[str]:
        """Immediate 'sub-directory' names under `prefix` (which ends with '/')."""
        names: set[str] = set()
        for info in self.list(prefix):
            rest = info.key[len(prefix) :]
            if "/" in rest:
                names.add(rest.split("/", 1)[0])
        return sorted(names)

    def cleanup_incomplete(
        self, prefix: str, older_than: datetime, *, keep: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Remove leftovers of interrupted writes under `prefix`; return what was removed.

        `keep(key)` is asked about each candidate only after all of them have been listed
        (so a lease read then covers every write it saw); a True answer spares it.
        """
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def describe(self, key: str) -> str:
        """A full address for messages: s3://bucket/prefix/key or a path."""
        return f"{self.url.rstrip('/')}/{key}"
