"""Logical dumps against real servers: mysqldump and mydumper round trips, per-database loads, failures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from backup_pipelines.core.dumps import restore_dump, run_dump
from backup_pipelines.core.errors import ExitCode, NotFoundError, RefusedError, ToolError
from backup_pipelines.core.session import Session
from backup_pipelines.core.verify import table_fingerprints
from tests.fixtures.mariadb import load_shop

pytestmark = pytest.mark.integration
DUMP_GRANTS = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES"


@pytest.fixture
def dump_source(source):
    load_shop(source)
    source.sql(f"GRANT {DUMP_GRANTS} ON *.* TO 'backup'@'localhost'")
    source.sql(
        "CREATE TRIGGER shop.audit_orders BEFORE INSERT ON shop.orders FOR EACH ROW SET NEW.note = "
        "COALESCE(NEW.note, 'none')"
    )
    source.sql("CREATE FUNCTION shop.double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2")
    source.sql("CREATE EVENT shop.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.orders WHERE amount < 0")
    return source


def _fp(server, dbs):
    with server.connect() as conn:
        return {k: v for k, v in table_fingerprints(conn, include_mysql=False).items() if k.split(".")[0] in dbs}


def _objects(m):
    return sorted(o.name for o in m.objects)


@pytest.mark.parametrize("engine", ["mysqldump", "mydumper"])
def test_dump_and_load_round_trip(engine, dump_source, make_config, staging_server, repo_key, tmp_path):
    cfg = make_config(
        key_file=repo_key,
        host_overrides={"dump": {"engine": engine}},
        extra={"staging": {"stage": staging_server.config_entry()}},
    )
    s = Session.open(cfg)
    m = run_dump(s, "db1")
    assert m.kind == "dump" and m.engine == engine and m.databases == ["inventory", "shop"]
    if engine == "mysqldump":
        assert _objects(m) == ["db/inventory.sql", "db/shop.sql", "grants.sql", "schema.sql"]
    else:
        assert _objects(m) == ["mydumper.tar"]
    assert all(o.key.endswith(".zst.enc") and len(o.sha256) == 64 for o in m.objects)
    assert m.labels["for_date"] == m.finished_at.date().isoformat()
    expected = _fp(dump_source.server, {"shop", "inventory"})

    res = restore_dump(s, "db1", "stage")
    assert res["databases"] == ["inventory", "shop"]
    staged = staging_server.server()
    assert _fp(staged, {"shop", "inventory"}) == expected
    assert staged.sql("SELECT shop.double_it(21)")[0][0] == 42
    assert staged.sql("SHOW TRIGGERS FROM shop")[0][0] == "audit_orders"
    assert staged.sql("SHOW EVENTS FROM shop")[0][1] == "nightly"


def test_single_database_restore_and_grants(dump_source, make_config, staging_server, tmp_path):
    cfg = make_config(extra={"staging": {"stage": staging_server.config_entry()}})
    s = Session.open(cfg)
    m = run_dump(s, "db1")
    grants = tmp_path / "grants.sql"
    from backup_pipelines.core.codec import CallableSink
    from backup_pipelines.core.restore import fetch_object

    with open(grants, "wb") as f:
        fetch_object(s, m, CallableSink(f.write), obj=next(o for o in m.objects if o.name == "grants.sql"))
    assert b"CREATE USER IF NOT EXISTS `backup`@`localhost`" in grants.read_bytes()
    # the CLI, with --database: only inventory arrives
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "backup_pipelines.cli",
            "-c",
            str(tmp_path / "config.yaml"),
            "restore-dump",
            "--host",
            "db1",
            "--target-host",
            "stage",
            "--database",
            "inventory",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["databases"] == ["inventory"]
    dbs = {r[0] for r in staging_server.server().sql("SHOW DATABASES")}
    assert "inventory" in dbs and "shop" not in dbs
    assert _fp(staging_server.server(), {"inventory"}) == _fp(dump_source.server, {"inventory"})


def test_loading_over_existing_databases_of_a_real_host_is_refused(dump_source, make_config):
    s = Session.open(make_config())
    run_dump(s, "db1")
    with pytest.raises(RefusedError, match="already has database"):
        restore_dump(s, "db1", "db1")


def test_a_failed_dump_leaves_nothing(dump_source, make_config, tmp_path):
    s = Session.open(make_config())
    dump_source.sql("REVOKE SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* FROM 'backup'@'localhost'")
    dump_source.sql("CREATE VIEW shop.v AS SELECT id FROM shop.orders")
    dump_source.sql("REVOKE SELECT ON *.* FROM 'backup'@'localhost'")
    dump_source.sql("GRANT SELECT ON shop.* TO 'backup'@'localhost'")
    with pytest.raises(ToolError) as err:
        run_dump(s, "db1")
    assert err.value.exit_code == ExitCode.TOOL_FAILED and "db1" in str(err.value)
    assert s.catalog.list_backups("db1") == []
    repo = tmp_path / "repository"
    assert not [p for p in repo.rglob("*") if p.is_file()]


def test_a_user_without_dump_privileges_is_told_which_to_grant(source, make_config):
    """With only mariabackup's grants, SHOW DATABASES lists nothing to dump: say what to grant."""
    load_shop(source)
    s = Session.open(make_config())
    with pytest.raises(NotFoundError) as err:
        run_dump(s, "db1")
    text = str(err.value)
    assert "db1" in text and "backup" in text and "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES" in text
    assert err.value.exit_code == ExitCode.NOT_FOUND
    assert s.catalog.list_backups("db1") == []
