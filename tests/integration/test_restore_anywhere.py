"""Restore from a repository and a key alone, with the engine that took the backup; no lost errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.config import parse_config
from backup_pipelines.core.errors import IntegrityError
from backup_pipelines.core.restore import restore_chain
from backup_pipelines.core.session import Session
from tests.fixtures.mariadb import fingerprint_datadir, load_shop

pytestmark = pytest.mark.integration


@pytest.fixture
def chain(source, make_config, repo_key, tmp_path):
    cfg = make_config(key_file=repo_key)
    load_shop(source, orders=500)
    session = Session.open(cfg)
    full = run_physical_backup(session, "db1", "full")
    source.sql("INSERT INTO shop.orders (account, amount, note) VALUES (1, 2, 'after full')")
    inc1 = run_physical_backup(session, "db1", "incremental")
    source.sql("INSERT INTO shop.orders (account, amount, note) VALUES (1, 3, 'after inc1')")
    inc2 = run_physical_backup(session, "db1", "incremental")
    return cfg, [full, inc1, inc2], source.fingerprint()


def test_a_decommissioned_host_restores_from_the_repository_and_key_alone(chain, repo_key, tmp_path):
    cfg, links, expected = chain
    # Disaster recovery: a fresh machine's config names the repository and the key, and no hosts.
    dr = tmp_path / "dr.yaml"
    repository = {"url": cfg.repository.url, "encryption_key_file": str(repo_key)}
    dr.write_text(yaml.safe_dump({"repository": repository, "hosts": {}, "work_dir": str(tmp_path / "dr-work")}))
    target = tmp_path / "recovered"
    argv = ["-c", str(dr), "restore", "--host", "db1", "--target-datadir", str(target)]
    out = subprocess.run(
        [sys.executable, "-m", "backup_pipelines.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert links[-1].id in out.stdout
    assert fingerprint_datadir(target, tmp_path / "run-recovered") == expected


def test_a_host_moved_to_another_engine_restores_old_chains_with_the_engine_that_took_them(chain, tmp_path):
    _cfg, links, _ = chain
    doc = yaml.safe_load((tmp_path / "config.yaml").read_text())
    # Since these backups the host moved to XtraBackup (not even installed here) with its own binaries.
    doc["hosts"]["db1"].update({"engine": "xtrabackup", "binary": "xtrabackup", "stream_binary": "xbstream"})
    moved = parse_config(doc, "moved.yaml")
    with Session.open(moved) as s:
        res = restore_chain(s, "db1", tmp_path / "restored", backup_id=links[1].id)
    assert res.chain == [links[0].id, links[1].id]
    assert (tmp_path / "restored" / "ibdata1").exists()


def test_every_extraction_error_is_reported_even_when_the_prepare_failed_first(chain, tmp_path):
    cfg, links, _ = chain
    for m in links[:2]:  # corrupt the base and the first incremental: both extractions fail at once
        obj = tmp_path / "repository" / m.objects[0].key
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0xFF
        obj.write_bytes(bytes(data))
    with Session.open(cfg) as s, pytest.raises(IntegrityError) as err:
        restore_chain(s, "db1", tmp_path / "restored")
    assert err.value.backup_id == links[0].id and "checksum mismatch" in str(err.value)
    notes = " ".join(getattr(err.value, "__notes__", []))
    assert "checksum mismatch" in notes and links[1].objects[0].key in notes
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())
    assert not list(tmp_path.glob(".restored.bp-restore-*"))
