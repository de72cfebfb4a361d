"""deploy/dagster.yaml (PostgreSQL) and deploy/dagster-dev.yaml (SQLite) load as real instances."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from backup_pipelines.defs.concurrency import (
    DUMP_HOST_TAG,
    PHYSICAL_HOST_TAG,
    RESTORE_HOST_TAG,
    HostAwareRunCoordinator,
    host_limit_tags,
)
from backup_pipelines.defs.keys import BASE, DUMP, HOST_TAG, VERIFICATION

pytestmark = pytest.mark.dagster
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LIMITS = [
    {"key": tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    for tag in (PHYSICAL_HOST_TAG, DUMP_HOST_TAG, RESTORE_HOST_TAG)
]


def _instance(tmp_path: Path, name: str) -> DagsterInstance:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / name, home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def _assert_queue_and_limits(instance: DagsterInstance) -> None:
    assert isinstance(instance.run_coordinator, HostAwareRunCoordinator)
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config.tag_concurrency_limits == LIMITS
    assert concurrency.pool_config.default_pool_limit == 8
    assert instance.run_monitoring_enabled


def test_production_instance_on_postgres(tmp_path, postgres_db, monkeypatch):
    for k, v in postgres_db.env.items():
        monkeypatch.setenv(k, v)
    with _instance(tmp_path, "dagster.yaml") as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        _assert_queue_and_limits(instance)
        # dagster-postgres's storages, on pooled connections: queries reuse one backend
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            pool = storage._engine.pool
            assert isinstance(pool, QueuePool) and pool.size() == 2, type(pool)
            pids = set()
            for _ in range(20):
                with storage._engine.connect() as conn:
                    pids.add(conn.execute(text("SELECT pg_backend_pid()")).scalar())
            assert len(pids) == 1, pids
        # the instance ref a run worker is started with builds the same pooled storage
        ref = instance.get_ref()
        assert ref.storage_data.class_name == "PooledPostgresStorage"
        with DagsterInstance.from_ref(ref) as worker:
            assert isinstance(worker.run_storage._engine.pool, QueuePool)
            assert worker.get_runs_count() == 0
        # (runs submitted through it are tagged per host: tests/dagster/test_production_instance.py)


def test_dev_instance_on_sqlite(tmp_path):
    with _instance(tmp_path, "dagster-dev.yaml") as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        _assert_queue_and_limits(instance)


@pytest.mark.unit
def test_dumps_and_physical_backups_of_a_host_take_separate_slots():
    assert host_limit_tags({"dagster/partition": "db1"}, [BASE], "__ASSET_JOB") == {PHYSICAL_HOST_TAG: "db1"}
    assert host_limit_tags({"dagster/partition": "db1"}, None, "logical_dumps") == {DUMP_HOST_TAG: "db1"}
    assert host_limit_tags({"dagster/partition": "db1"}, [BASE, DUMP], "__ASSET_JOB") == {
        PHYSICAL_HOST_TAG: "db1",
        DUMP_HOST_TAG: "db1",
    }
    # a restore point's partition is host|day: the host comes from its dimension tag
    tags = {"dagster/partition": "2026-12-01|db2", "dagster/partition/host": "db2"}
    assert host_limit_tags(tags, [VERIFICATION], "__ASSET_JOB") == {RESTORE_HOST_TAG: "db2"}
    assert host_limit_tags({HOST_TAG: "db3"}, None, "retention") == {}
    assert host_limit_tags({}, [BASE], "__ASSET_JOB") == {}
