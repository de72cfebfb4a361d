"""Staging restores: stop, restore, start, check; only targets marked staging; failures roll back."""

from __future__ import annotations

import shutil

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


FLAKY_START = """
mode=$(cat "$MODE_FILE" 2>/dev/null); rm -f "$MODE_FILE"
case "$mode" in
  fail) echo "simulated: the init system refused to start it" >&2; exit 3;;
  noop) exit 0;;
  corrupt) printf 'not a MyISAM index at all' | dd of="$DATADIR/shop/legacy.MYI" conv=notrunc 2>/dev/null;;
esac
exec "$@"
"""


def _databases(staging, timeout: float = 60) -> list[str]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return [r[0] for r in staging.server().sql("SHOW DATABASES")]
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_every_failure_after_the_swap_rolls_back_and_restarts_the_previous_data(
    source, make_config, staging_server, tmp_path
):
    from backup_pipelines.core.errors import ToolError, VerificationFailed

    mode = tmp_path / "start-mode"
    entry = staging_server.config_entry()
    entry["start_command"] = [
        "env",
        f"MODE_FILE={mode}",
        f"DATADIR={staging_server.datadir}",
        "sh",
        "-c",
        FLAKY_START,
        "sh",
        *staging_server.start_command,
    ]
    entry["start_timeout_seconds"] = 3
    cfg = make_config(extra={"staging": {"stage1": entry}})
    load_shop(source, orders=200)
    source.sql("CREATE TABLE shop.legacy (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM")
    source.sql("INSERT INTO shop.legacy VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    s = Session.open(cfg)
    full = run_physical_backup(s, "db1", "full")
    aside = staging_server.root / "data.bp-previous"

    cases = [
        ("fail", ToolError, "starting staging server stage1 failed"),
        ("noop", ToolError, "did not accept connections within 3s"),
        ("corrupt", VerificationFailed, "shop.legacy"),
    ]
    for what, error, message in cases:
        mode.write_text(what)
        with pytest.raises(error, match=message) as err:
            staging_restore(s, "stage1", "db1")
        assert "put back" in str(err.value) and "restarted" in str(err.value), (what, str(err.value))
        dbs = _databases(staging_server)
        assert "old_staging_data" in dbs and "shop" not in dbs, what  # the previous data, running again
        assert not aside.exists(), what
        assert not mode.exists(), what  # the wrapper really ran its failure
    failed = s.catalog.verifications("db1", full.id)
    assert [r.passed for r in failed] == [False]  # the failed check is on record
    assert any("shop.legacy" in p for p in failed[0].problems)

    # An interrupted run left its aside copy: the next run refuses and touches nothing.
    aside.mkdir()
    (aside / "only-copy").write_text("precious")
    with pytest.raises(RefusedError, match="interrupted restore"):
        staging_restore(s, "stage1", "db1")
    assert (aside / "only-copy").read_text() == "precious"
    assert "old_staging_data" in _databases(staging_server, timeout=5)  # never stopped
    shutil.rmtree(aside)

    report = staging_restore(s, "stage1", "db1")  # and a good run still replaces staging
    assert report.passed and "shop" in _databases(staging_server) and not aside.exists()
