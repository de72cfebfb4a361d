"""Staging restores: stop, restore, start, check; only targets marked staging; failures roll back."""

from __future__ import annotations

import pytest

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.errors import NotFoundError, RefusedError
from backup_pipelines.core.session import Session
from backup_pipelines.core.staging import staging_restore
from backup_pipelines.core.verify import table_fingerprints
from tests.fixtures.mariadb import load_shop

pytestmark = pytest.mark.integration


def _fp(staging):
    with staging.server().connect() as conn:
        return table_fingerprints(conn, include_mysql=False)


def test_staging_restore_replays_the_point_and_checks_it(source, make_config, staging_server):
    entry = staging_server.config_entry()
    cfg = make_config(extra={"staging": {"stage1": entry, "prod": {**entry, "staging": False}}})
    load_shop(source)
    s = Session.open(cfg)
    full = run_physical_backup(s, "db1", "full")
    at_full = source.fingerprint()
    source.sql("UPDATE shop.accounts SET balance = 0 WHERE id < 10")
    run_physical_backup(s, "db1", "incremental")
    at_inc = source.fingerprint()

    with pytest.raises(RefusedError, match="not marked `staging: true`"):
        staging_restore(s, "prod", "db1")
    assert "old_staging_data" in [r[0] for r in staging_server.server().sql("SHOW DATABASES")]

    report = staging_restore(s, "stage1", "db1")
    assert report.passed and report.target == "stage1" and len(report.chain) == 2
    assert _fp(staging_server) == at_inc
    assert "old_staging_data" not in [r[0] for r in staging_server.server().sql("SHOW DATABASES")]
    assert not (staging_server.root / "data.bp-previous").exists()
    # the record of what staging runs now is in the repository
    assert s.catalog.verifications("db1", report.backup_id)[-1].target == "stage1"

    staging_restore(s, "stage1", "db1", backup_id=full.id)
    assert _fp(staging_server) == at_full


def test_failed_staging_restore_leaves_staging_as_it_was(source, make_config, staging_server, tmp_path):
    cfg = make_config(extra={"staging": {"stage1": staging_server.config_entry()}})
    load_shop(source)
    s = Session.open(cfg)
    full = run_physical_backup(s, "db1", "full")
    with pytest.raises(NotFoundError):
        staging_restore(s, "stage1", "db1", backup_id="missing")  # fails before stopping anything
    # corrupt the data object: the restore fails after the server was stopped, and is rolled back
    obj = tmp_path / "repository" / full.objects[0].key
    data = bytearray(obj.read_bytes())
    data[100] ^= 1
    obj.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum mismatch"):
        staging_restore(s, "stage1", "db1")
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            dbs = [r[0] for r in staging_server.server().sql("SHOW DATABASES")]
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert "old_staging_data" in dbs
