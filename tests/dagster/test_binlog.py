"""Binlog archiving through Dagster: the push asset, its freshness check (a gap turns it red), the schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import build_schedule_context

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.session import Session
from backup_pipelines.definitions import build_definitions
from tests.fixtures.binlog import grant_archiver
from tests.fixtures.dagster import check_results, materialization_metadata

pytestmark = [pytest.mark.dagster, pytest.mark.integration]


def test_binlog_push_asset_check_and_schedule(source, make_config, dagster_instance, tmp_path):
    grant_archiver(source)
    cfg = make_config(host_overrides={"binlog": {"archiver": "push", "rpo_seconds": 60}})
    source.sql("CREATE DATABASE app")
    source.sql("CREATE TABLE app.t (id INT PRIMARY KEY)")
    run_physical_backup(Session.open(cfg), "db1", "full")
    source.sql("INSERT INTO app.t VALUES (1)")
    defs = build_definitions(tmp_path / "config.yaml")
    job = defs.resolve_job_def("binlog_push")

    ok = job.execute_in_process(instance=dagster_instance, partition_key="db1")
    assert ok.success
    meta = materialization_metadata(ok)
    assert meta["gap_count"] == 0 and meta["latest_restorable_epoch"] > datetime.now(UTC).timestamp() - 60
    assert check_results(ok) == {"binlog_freshness": True}

    # Purged before archived: the next push materializes the evidence and the check goes red at once.
    source.sql("INSERT INTO app.t VALUES (2)")
    source.sql("FLUSH BINARY LOGS")
    source.sql("INSERT INTO app.t VALUES (3)")
    source.sql("FLUSH BINARY LOGS")
    newest = source.sql("SHOW BINARY LOGS")[-1][0]
    source.sql(f"PURGE BINARY LOGS TO '{newest}'")
    red = job.execute_in_process(instance=dagster_instance, partition_key="db1")
    assert red.success and materialization_metadata(red)["gap_count"] == 1
    assert check_results(red) == {"binlog_freshness": False}

    sched = defs.resolve_schedule_def("binlog_push")
    requests = sched.evaluate_tick(
        build_schedule_context(
            instance=dagster_instance,
            scheduled_execution_time=datetime(2026, 12, 2, 5, 10, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
    ).run_requests
    assert [r.partition_key for r in requests] == ["db1"]
