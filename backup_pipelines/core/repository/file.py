"""A repository on a local (or mounted) filesystem: the embedded default.

Writes go to a hidden `.partial` sibling, are fsynced, then renamed into place, so a
reader never sees half an object and a crash leaves only `.partial` files, which
`cleanup_incomplete` removes once they are older than the grace period.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import NotFoundError, StorageError
from .base import Buffer, ObjectInfo, Repository

PARTIAL = ".partial-"
READ_SIZE = 4 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileWriter:
    def __init__(self, repo: FileRepository, key: str) -> None:
        self.key = key
        self._final = repo._path(key)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._final.with_name(f".{self._final.name}{PARTIAL}{uuid.uuid4().hex[:12]}")
        self._f = open(self._tmp, "wb", buffering=0)  # noqa: SIM115 - closed in commit/abort
        self._size = 0
        self._done = False

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        try:
            while len(view):
                n = self._f.write(view)
                view = view[n:]
        except OSError as err:
            self.abort()
            raise StorageError(
                f"cannot write {self._final}: {err.strerror}",
                key=self.key,
                hint="check free space and permissions on the repository filesystem",
            ) from None
        self._size += len(data)
        return len(data)

    def commit(self) -> ObjectInfo:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self._final)
            _fsync_dir(self._final.parent)
        except OSError as err:
            self.abort()
            raise StorageError(f"cannot commit {self._final}: {err.strerror}", key=self.key) from None
        self._done = True
        return ObjectInfo(self.key, self._size, datetime.now(UTC))

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._f.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class FileRepository(Repository):
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ValueError(f"not a local file URL: {url}")
        self.url = url.rstrip("/")
        self.root = Path(unquote(parsed.path))

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.root / key

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def open_writer(self, key: str, *, size_hint: int | None = None) -> FileWriter:
        try:
            return FileWriter(self, key)
        except OSError as err:
            raise StorageError(
                f"cannot create {self._path(key)}: {err.strerror}",
                key=key,
                hint=f"check that {self.root} exists and is writable",
            ) from None

    def read_into(self, key: str, sink: Callable[[memoryview], object]) -> int:
        path = self._path(key)
        total = 0
        try:
            with open(path, "rb", buffering=0) as f:
                buf = bytearray(READ_SIZE)
                view = memoryview(buf)
                while n := f.readinto(buf):
                    sink(view[:n])
                    total += n
        except FileNotFoundError:
            raise NotFoundError(f"object {path} does not exist", key=key) from None
        except OSError as err:
            raise StorageError(f"cannot read {path}: {err.strerror}", key=key) from None
        return total

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"object {path} does not exist", key=key) from None
        except OSError as err:
            raise StorageError(f"cannot read {path}: {err.strerror}", key=key) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        w = self.open_writer(key)
        w.write(data)
        w.commit()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        # The prefix may end mid-name ("hosts/db" matches "hosts/db1/..."): walk its parent.
        start = base if prefix.endswith("/") or not prefix else base.parent
        if not start.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in filenames:
                if name.startswith(".") and PARTIAL in name:
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        yield from sorted(found, key=lambda o: o.key)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                raise StorageError(f"cannot delete {path}: {err.strerror}", key=key) from None
            # Remove now-empty directories up to the root, keeping the tree tidy.
            parent = path.parent
            while parent != self.root and parent.is_relative_to(self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def cleanup_incomplete(
        self, prefix: str, older_than: datetime, *, keep: Callable[[str], bool] | None = None
    ) -> list[str]:
        removed: list[str] = []
        start = self.root / prefix
        if not start.is_dir():
            return removed
        cutoff = older_than.timestamp()
        stale: list[Path] = []
        for dirpath, _dirs, filenames in os.walk(start):
            for name in filenames:
                if PARTIAL not in name:
                    continue
                full = Path(dirpath) / name
                try:
                    if full.stat().st_mtime < cutoff:
                        stale.append(full)
                except FileNotFoundError:
                    continue
        for full in stale:
            # `.<name>.partial-<id>` is being written as `<name>`: ask about the final key.
            final = full.with_name(full.name[1:].split(PARTIAL, 1)[0]).relative_to(self.root).as_posix()
            if keep is not None and keep(final):
                continue
            with contextlib.suppress(FileNotFoundError):
                full.unlink()
                removed.append(full.relative_to(self.root).as_posix())
        return removed
