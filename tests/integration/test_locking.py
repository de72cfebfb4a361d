"""At most one backup per host at a time, enforced on the worker itself."""

from __future__ import annotations

from datetime import UTC, datetime

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


HOLD = """
import sys, time
from pathlib import Path
from backup_pipelines.core.locks import host_lock
with host_lock(Path(sys.argv[1]), "db1", "held by another process", kind=sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(work_dir, kind):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work_dir), kind], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_kinds_a_dump_never_blocks_physical_backups_but_physical_runs_exclude_each_other(source, make_config):
    cfg = make_config()
    session = Session.open(cfg)
    dump_holder = _hold(cfg.work_dir, "dump")
    try:
        full = run_physical_backup(session, "db1", "full")  # a dump running elsewhere does not matter
    finally:
        dump_holder.kill()
        dump_holder.wait()
    physical_holder = _hold(cfg.work_dir, "physical")
    try:
        with pytest.raises(LockedError, match="another physical backup of host db1 is running") as err:
            run_physical_backup(session, "db1", "incremental")
        assert err.value.exit_code == ExitCode.LOCKED
    finally:
        physical_holder.kill()
        physical_holder.wait()
    assert [m.id for m in session.catalog.list_backups("db1")] == [full.id]
    assert session.catalog.leased_ids("db1") == set()  # a refused run leaves no lease behind


def test_two_full_backups_started_at_once_one_proceeds_the_other_exits_9(source, make_config, tmp_path):
    import subprocess
    import sys

    make_config()
    argv = [sys.executable, "-m", "backup_pipelines.cli", "-c", str(tmp_path / "config.yaml"), "backup", "full"]
    procs = [subprocess.Popen([*argv, "--host", "db1"], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs)
    assert [rc for rc, _ in results] == [0, ExitCode.LOCKED], results
    assert "another physical backup of host db1 is running" in results[1][1]
    session = Session.open(make_config())
    assert [m.kind for m in session.catalog.list_backups("db1")] == ["full"]
    assert session.catalog.orphans("db1", older_than=datetime.now(UTC)) == []  # the refused run wrote nothing
    assert session.catalog.leased_ids("db1") == set()
