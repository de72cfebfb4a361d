"""At most one backup per host at a time, enforced on the worker itself."""

from __future__ import annotations

import pytest

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.errors import ExitCode, LockedError
from backup_pipelines.core.locks import host_lock
from backup_pipelines.core.session import Session

pytestmark = pytest.mark.integration


def test_a_second_backup_of_the_same_host_is_refused(source, make_config):
    cfg = make_config()
    session = Session.open(cfg)
    with host_lock(cfg.work_dir, "db1", "a long full backup"), pytest.raises(LockedError) as err:
        run_physical_backup(session, "db1", "full")
    assert err.value.exit_code == ExitCode.LOCKED and "a long full backup" in str(err.value)
    assert session.catalog.list_backups("db1") == []
    assert run_physical_backup(session, "db1", "full").kind == "full"  # the lock died with its holder
