"""S3Repository against moto: the Repository contract, prefixes, batching, errors and cleanup."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from backup_pipelines.core.config import RepositoryConfig, S3Settings
from backup_pipelines.core.errors import NotFoundError
from backup_pipelines.core.repository import open_repository
from backup_pipelines.core.repository.s3 import S3Repository
from backup_pipelines.core.repository.s3 import driver as s3_mod

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture
def repo(s3_server, s3_bucket):
    r = S3Repository(
        f"s3://{s3_bucket}/backups/main", endpoint_url=s3_server.endpoint_url, part_size=PART, concurrency=3
    )
    yield r
    r.close()


def test_writer_is_invisible_until_commit(repo):
    w = repo.open_writer("hosts/a/backups/1/data")
    data = os.urandom(2 * PART + 3)
    w.write(data[:100])
    w.write(memoryview(data)[100:])
    assert repo.stat("hosts/a/backups/1/data") is None
    assert list(repo.list("hosts/")) == []
    info = w.commit()
    assert (info.key, info.size) == ("hosts/a/backups/1/data", len(data))
    chunks: list[bytes] = []
    assert repo.read_into("hosts/a/backups/1/data", lambda b: chunks.append(bytes(b))) == len(data)
    assert b"".join(chunks) == data
    st = repo.stat("hosts/a/backups/1/data")
    assert st is not None and st.size == len(data) and st.modified is not None
    assert repo.describe("hosts/a/backups/1/data") == f"s3://{repo.bucket}/backups/main/hosts/a/backups/1/data"


def test_abort_leaves_nothing(repo, s3_server):
    with pytest.raises(RuntimeError), repo.open_writer("k/x") as w:
        w.write(os.urandom(PART + 1))
        raise RuntimeError("producer died")
    assert list(repo.list("")) == []
    assert s3_server.client().list_multipart_uploads(Bucket=repo.bucket).get("Uploads", []) == []


def test_small_objects_list_prefixes_and_delete(repo):
    for k in ("hosts/db1/backups/a/m", "hosts/db1/backups/b/m", "hosts/db10/x", "other"):
        repo.put_bytes(k, b"1")
    assert repo.get_bytes("other") == b"1"
    assert [i.key for i in repo.list("hosts/db1/")] == ["hosts/db1/backups/a/m", "hosts/db1/backups/b/m"]
    assert [i.key for i in repo.list("hosts/db1")] == [
        "hosts/db1/backups/a/m",
        "hosts/db1/backups/b/m",
        "hosts/db10/x",
    ]
    assert repo.list_dirs("hosts/") == ["db1", "db10"]
    repo.delete(["hosts/db1/backups/a/m", "missing"])
    with pytest.raises(NotFoundError, match="does not exist"):
        repo.get_bytes("hosts/db1/backups/a/m")
    assert repo.stat("hosts/db1/backups/a/m") is None and not repo.exists("hosts/db1/backups/a/m")
    repo.put_bytes("empty", b"")
    assert repo.get_bytes("empty") == b"" and repo.stat("empty").size == 0  # type: ignore[union-attr]


def test_prefixes_isolate_repositories(s3_server, s3_bucket):
    a = S3Repository(f"s3://{s3_bucket}/one", endpoint_url=s3_server.endpoint_url)
    b = S3Repository(f"s3://{s3_bucket}/one-more/", endpoint_url=s3_server.endpoint_url)
    root = S3Repository(f"s3://{s3_bucket}", endpoint_url=s3_server.endpoint_url)
    a.put_bytes("k", b"a")
    b.put_bytes("k", b"b")
    assert [i.key for i in a.list("")] == ["k"] and a.get_bytes("k") == b"a"
    assert [i.key for i in b.list("")] == ["k"] and b.get_bytes("k") == b"b"
    assert [i.key for i in root.list("")] == ["one-more/k", "one/k"]


def test_delete_goes_in_batches(repo, monkeypatch):
    monkeypatch.setattr(s3_mod, "DELETE_BATCH", 3)
    names = [f"d/{i:02}" for i in range(8)]
    for n in names:
        repo.put_bytes(n, b"x")
    calls = []
    original = repo.client.delete_objects

    def counting(**kw):
        calls.append(len(kw["Delete"]["Objects"]))
        return original(**kw)

    monkeypatch.setattr(repo.client, "delete_objects", counting)
    repo.delete(iter([*names, "d/missing"]))
    assert calls == [3, 3, 3]
    assert list(repo.list("d/")) == []


def test_missing_bucket_is_not_found(s3_server):
    repo = S3Repository("s3://no-such-bucket-for-repo/x", endpoint_url=s3_server.endpoint_url)
    for call in (
        lambda: repo.get_bytes("k"),
        lambda: list(repo.list("")),
        lambda: repo.stat("k"),
        lambda: repo.read_into("k", lambda v: None),
        lambda: repo.put_bytes("k", b"1"),
    ):
        with pytest.raises(NotFoundError, match="bucket no-such-bucket-for-repo") as exc:
            call()
        assert exc.value.hint


def test_cleanup_incomplete_respects_prefix_and_age(repo, s3_server):
    stale = repo.open_writer("hosts/a/backups/1/data")
    stale.write(os.urandom(PART + 1))
    other = repo.open_writer("hosts/b/backups/1/data")
    other.write(os.urandom(PART + 1))
    # moto reports every upload as initiated on 2010-11-10, so an older cutoff keeps them all.
    assert repo.cleanup_incomplete("hosts/a/", datetime(2001, 1, 1, tzinfo=UTC)) == []
    assert repo.cleanup_incomplete("hosts/a/", datetime.now(UTC)) == ["hosts/a/backups/1/data"]
    left = s3_server.client().list_multipart_uploads(Bucket=repo.bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["backups/main/hosts/b/backups/1/data"]
    other.abort()
    stale.abort()  # its upload is already gone: still fine


def test_open_repository_from_config(s3_server, s3_bucket):
    cfg = RepositoryConfig(
        url=f"s3://{s3_bucket}/cfg",
        s3=S3Settings(endpoint_url=s3_server.endpoint_url, part_size=PART, concurrency=2),
    )
    repo = open_repository(cfg)
    assert isinstance(repo, S3Repository) and repo.concurrency == 2 and repo.part_size == PART
    repo.put_bytes("m.json", b"{}")
    assert repo.get_bytes("m.json") == b"{}"
    repo.close()
