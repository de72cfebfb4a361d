"""The filesystem driver: atomic commits, listing, deletes and interrupted-write cleanup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_pipelines.core.errors import NotFoundError
from backup_pipelines.core.repository import FileRepository

pytestmark = pytest.mark.unit


def test_writer_is_invisible_until_commit(tmp_path):
    repo = FileRepository(f"file://{tmp_path}")
    w = repo.open_writer("hosts/a/backups/1/data")
    w.write(b"abc")
    w.write(memoryview(b"def"))
    assert repo.stat("hosts/a/backups/1/data") is None
    assert list(repo.list("hosts/")) == []
    info = w.commit()
    assert info.size == 6 and repo.get_bytes("hosts/a/backups/1/data") == b"abcdef"
    chunks: list[bytes] = []
    assert repo.read_into("hosts/a/backups/1/data", lambda b: chunks.append(bytes(b))) == 6


def test_abort_leaves_nothing(tmp_path):
    repo = FileRepository(f"file://{tmp_path}")
    with pytest.raises(RuntimeError), repo.open_writer("k/x") as w:
        w.write(b"data")
        raise RuntimeError("producer died")
    assert list(tmp_path.iterdir()) == []  # not even the directory the writer made (a failed backup's)


def test_list_prefix_dirs_and_delete(tmp_path):
    repo = FileRepository(f"file://{tmp_path}")
    for k in ("hosts/db1/backups/a/m", "hosts/db1/backups/b/m", "hosts/db10/x", "other"):
        repo.put_bytes(k, b"1")
    assert [i.key for i in repo.list("hosts/db1/")] == ["hosts/db1/backups/a/m", "hosts/db1/backups/b/m"]
    assert [i.key for i in repo.list("hosts/db1")] == [
        "hosts/db1/backups/a/m",
        "hosts/db1/backups/b/m",
        "hosts/db10/x",
    ]
    assert repo.list_dirs("hosts/") == ["db1", "db10"]
    repo.delete(["hosts/db1/backups/a/m", "missing"])
    assert not (tmp_path / "hosts/db1/backups/a").exists()
    with pytest.raises(NotFoundError):
        repo.get_bytes("hosts/db1/backups/a/m")


def test_cleanup_incomplete_respects_age(tmp_path):
    repo = FileRepository(f"file://{tmp_path}")
    w = repo.open_writer("hosts/db1/backups/x/data")
    w.write(b"partial")
    assert repo.cleanup_incomplete("hosts/", datetime.now(UTC) - timedelta(hours=1)) == []
    removed = repo.cleanup_incomplete("hosts/", datetime.now(UTC) + timedelta(seconds=1))
    assert len(removed) == 1 and ".partial-" in removed[0]


def test_keys_cannot_escape_the_root(tmp_path):
    repo = FileRepository(f"file://{tmp_path}")
    with pytest.raises(ValueError):
        repo.put_bytes("../evil", b"x")
