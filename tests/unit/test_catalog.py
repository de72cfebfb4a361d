"""Catalog logic on a real file repository with synthetic manifests: resolution, chains, orphans."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_pipelines.core.catalog import BackupManifest, Catalog, StoredObject, new_backup_id
from backup_pipelines.core.crypto import Keyring, generate_key_text, parse_key_text
from backup_pipelines.core.errors import ChainError, NotFoundError, StorageError, WrongKeyError
from backup_pipelines.core.integrity import check_catalog
from backup_pipelines.core.leases import Lease
from backup_pipelines.core.repository import FileRepository

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def manifest(
    cat: Catalog,
    i: int,
    kind: str,
    parent: BackupManifest | None,
    from_lsn: int,
    to_lsn: int,
    host: str = "db1",
) -> BackupManifest:
    finished = T0 + timedelta(minutes=15 * i)
    bid = new_backup_id(kind, finished)
    key = cat.object_key(host, bid, "data.xbstream")
    cat.repo.put_bytes(key, b"x" * 10)
    m = BackupManifest(
        id=bid,
        host=host,
        kind=kind,
        parent_id=parent.id if parent else None,
        chain_id=(parent.chain_id if parent else bid),
        engine="mariabackup",
        from_lsn=from_lsn,
        to_lsn=to_lsn,
        started_at=finished - timedelta(seconds=30),
        finished_at=finished,
        duration_seconds=30,
        size_bytes=10,
        source_size_bytes=10,
        compression="none",
        objects=[StoredObject(name="data", key=key, size=10, sha256="0" * 64)],
    )
    cat.write_manifest(m)
    return m


@pytest.fixture(params=["plain", "encrypted"])
def cat(request, tmp_path):
    key = parse_key_text(generate_key_text()) if request.param == "encrypted" else None
    return Catalog(FileRepository(f"file://{tmp_path}/repo"), Keyring(key))


@pytest.fixture
def chain(cat):
    full = manifest(cat, 0, "full", None, 0, 100)
    i1 = manifest(cat, 1, "incremental", full, 100, 150)
    i2 = manifest(cat, 2, "incremental", i1, 150, 180)
    full2 = manifest(cat, 3, "full", None, 0, 200)
    i3 = manifest(cat, 4, "incremental", full2, 200, 260)
    return [full, i1, i2, full2, i3]


def test_list_is_oldest_first_and_round_trips(cat, chain):
    assert [m.id for m in cat.list_backups("db1")] == [m.id for m in chain]
    assert cat.read_manifest("db1", chain[1].id) == chain[1]
    assert cat.hosts() == ["db1"]


def test_resolve_by_id_time_and_default(cat, chain):
    assert cat.resolve("db1").id == chain[-1].id
    assert cat.resolve("db1", backup_id=chain[1].id).id == chain[1].id
    # exactly at a finish time picks it; a minute later still picks it; before the first fails
    assert cat.resolve("db1", at=chain[2].finished_at).id == chain[2].id
    assert cat.resolve("db1", at=(chain[2].finished_at + timedelta(minutes=1)).isoformat()).id == chain[2].id
    assert cat.resolve("db1", at="2026-11-20T01:20:00Z").id == chain[1].id
    with pytest.raises(NotFoundError, match="finished at or before"):
        cat.resolve("db1", at=T0 - timedelta(days=1))
    with pytest.raises(NotFoundError, match="not in the catalog"):
        cat.resolve("db1", backup_id="nope")
    with pytest.raises(NotFoundError, match="no completed backup"):
        cat.resolve("db2")


def test_chain_walks_to_the_full(cat, chain):
    assert [m.id for m in cat.chain("db1", chain[2].id)] == [m.id for m in chain[:3]]
    assert [m.id for m in cat.chain("db1", chain[4].id)] == [chain[3].id, chain[4].id]


def test_missing_link_names_the_missing_backup(cat, chain):
    cat.repo.delete([cat.manifest_key("db1", chain[1].id)])
    with pytest.raises(ChainError) as err:
        cat.chain("db1", chain[2].id)
    assert chain[1].id in str(err.value)
    assert [m.id for m in cat.chain("db1", chain[0].id)] == [chain[0].id]  # earlier points still fine
    report = check_catalog(cat, "db1")
    assert any("parent" in p and chain[1].id in p for p in report["problems"])


def test_lsn_gap_is_a_chain_error(cat):
    full = manifest(cat, 0, "full", None, 0, 100)
    bad = manifest(cat, 1, "incremental", full, 120, 150)
    with pytest.raises(ChainError, match="LSN gap"):
        cat.chain("db1", bad.id)
    assert any("starts at LSN 120" in p for p in check_catalog(cat, "db1")["problems"])


def test_integrity_report_of_a_healthy_catalog(cat, chain):
    report = check_catalog(cat, "db1")
    assert report["problems"] == [] and report["backups"] == 5 and report["chains"] == 2
    os.truncate(cat.repo.root / chain[2].objects[0].key, 3)
    assert any("is 3 bytes" in p for p in check_catalog(cat, "db1")["problems"])


def test_orphans_are_removed_only_after_the_grace(cat, chain):
    key = cat.object_key("db1", "20261129T000000000Z-incremental", "data.xbstream")
    cat.repo.put_bytes(key, b"half a backup")
    partial = cat.repo.open_writer(cat.object_key("db1", "20261129T000001000Z-full", "data.xbstream"))
    partial.write(b"interrupted")
    assert cat.cleanup_orphans("db1", timedelta(hours=1)) == []
    time.sleep(0.05)
    removed = cat.cleanup_orphans("db1", timedelta(0))
    assert key in removed and any(".partial-" in r for r in removed)
    assert [m.id for m in cat.list_backups("db1")] == [m.id for m in chain]
    assert cat.orphans("db1", datetime.now(UTC)) == []


def test_two_phase_delete_and_interrupted_prune(cat, chain):
    cat.delete_backup(chain[4])
    assert chain[4].id not in [m.id for m in cat.list_backups("db1")]
    # A crash after marking and deleting data leaves a 'deleting' manifest: never listed, cleaned up.
    marked = chain[3].model_copy(update={"status": "deleting"})
    cat.write_manifest(marked)
    assert chain[3].id not in [m.id for m in cat.list_backups("db1")]
    cat.cleanup_orphans("db1", timedelta(hours=1))
    assert not cat.repo.exists(cat.manifest_key("db1", chain[3].id))


def test_leases_expire(cat, chain):
    with cat.lease("db1", [chain[0].id], purpose="test"):
        assert cat.leased_ids("db1") == {chain[0].id}
        assert cat.leased_ids("db1", now=datetime.now(UTC) + timedelta(days=2)) == set()
    assert cat.leased_ids("db1") == set()


def test_encrypted_catalog_needs_the_key(tmp_path):
    key = parse_key_text(generate_key_text())
    cat = Catalog(FileRepository(f"file://{tmp_path}/repo"), Keyring(key))
    m = manifest(cat, 0, "full", None, 0, 10)
    for keyring in (Keyring(None), Keyring(parse_key_text(generate_key_text()))):
        with pytest.raises(WrongKeyError) as err:
            Catalog(cat.repo, keyring).list_backups("db1")
        assert m.id in str(err.value) or "manifest" in str(err.value)


def test_size_hints_come_from_the_newest_backup_of_the_same_kind(cat, chain):
    """The uploader sizes its parts from these: a full must not be sized by an incremental."""
    newest_full = chain[3].model_copy(update={"objects": [chain[3].objects[0].model_copy(update={"size": 12345})]})
    cat.write_manifest(newest_full)
    assert cat.size_hints("db1", "full") == {"data": 12345}
    assert cat.size_hints("db1", "incremental") == {"data": 10}
    assert cat.size_hints("db1", "dump") == {}
    assert cat.size_hints("nosuchhost", "full") == {}


def test_a_manifest_is_committed_only_when_every_object_it_names_is_stored(cat):
    m = manifest(cat, 1, "full", None, 0, 10)
    cat.repo.delete([cat.manifest_key("db1", m.id)])
    cat.repo.delete([m.objects[0].key])  # e.g. removed by a cleanup while the run was writing
    with pytest.raises(StorageError, match="was not committed: its object is missing") as err:
        cat.commit_manifest(m)
    assert err.value.key and m.objects[0].key in err.value.key and err.value.backup_id == m.id
    assert cat.list_backups("db1") == []
    cat.repo.put_bytes(m.objects[0].key, b"x" * 9)
    with pytest.raises(StorageError, match="is 9 bytes, 10 were written"):
        cat.commit_manifest(m)
    cat.repo.put_bytes(m.objects[0].key, b"x" * 10)
    cat.commit_manifest(m)
    assert [b.id for b in cat.list_backups("db1")] == [m.id]


def test_a_lease_is_renewed_while_held_and_lapses_when_its_holder_stops(cat):
    with cat.lease("db1", ["b1"], purpose="test", ttl=1.0) as lease:
        time.sleep(2.0)  # two lease periods: renewal keeps it live
        assert cat.leased_ids("db1") == {"b1"}
        cat.repo.put_bytes("hosts/db1/backups/b1/data.xbstream", b"x")
        assert cat.cleanup_orphans("db1", timedelta(0)) == []
        lease.extend(["parent"])
        assert cat.leased_ids("db1") == {"b1", "parent"}
    assert not cat.repo.exists(lease.key)
    assert cat.cleanup_orphans("db1", timedelta(0)) == ["hosts/db1/backups/b1/data.xbstream"]


def test_cleanup_sweeps_the_leases_of_dead_runs_only(cat):
    dead = Lease(cat, "db1", ["gone"], purpose="killed run", ttl=1.0)
    dead.write()  # written once and never renewed, as by a process that died
    with cat.lease("db1", ["alive"], purpose="test", ttl=60):
        time.sleep(1.2)
        assert cat.cleanup_orphans("db1", timedelta(0)) == [dead.key]
        assert cat.leased_ids("db1") == {"alive"}
