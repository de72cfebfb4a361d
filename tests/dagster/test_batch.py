"""Batched scheduled backups for real: the schedule's run request executed as Dagster executes it
(`execute_job` on the code location, the threaded executor, a real instance) against a real
MariaDB, three host entries on it and one whose server is not there."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetCheckKey,
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    build_schedule_context,
    execute_job,
)
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.storage.event_log.base import PartitionKeyFilter

from backup_pipelines.core.config import CONFIG_ENV
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.batch import BATCH_JOB
from backup_pipelines.defs.checks import RPO_CHECK, latest_materialization
from backup_pipelines.defs.keys import BASE, INCREMENTAL
from backup_pipelines.defs.sensors import failure_payload

pytestmark = [pytest.mark.dagster, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def batch_fleet(make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """db1..db3 back up the same real server; dbx names a server that does not exist."""
    make_config(extra={"orchestration": {"retry_max": 1, "retry_delay_seconds": 0.5, "batch_parallelism": 4}})
    path = tmp_path / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    (_, host), *_ = doc["hosts"].items()
    doc["hosts"] = {h: dict(host) for h in ("db1", "db2", "db3")}
    doc["hosts"]["dbx"] = {**host, "socket": str(tmp_path / "gone.sock")}
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return path


def _recon() -> ReconstructableJob:
    repo = ReconstructableRepository.for_module("backup_pipelines.definitions", "defs", working_directory=str(ROOT))
    return ReconstructableJob(repo, BATCH_JOB)


def _tick(defs, instance: DagsterInstance, when: datetime):
    sched = next(s for s in defs.schedules if s.name.startswith("incremental_backups_every_15m"))
    ctx = build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    (req,) = sched.evaluate_tick(ctx).run_requests
    return req


def _run(instance: DagsterInstance, req) -> tuple[str, bool]:
    with execute_job(_recon(), instance=instance, run_config=req.run_config, tags=req.tags) as result:
        return result.run_id, result.success


def test_a_tick_backs_up_every_due_host_in_one_run(batch_fleet, dagster_instance, source):
    defs = build_definitions(batch_fleet)
    # 1. first tick: no host has a base, so every host gets one, in one run
    started = time.monotonic()
    req = _tick(defs, dagster_instance, datetime.now(UTC))
    run_id, ok = _run(dagster_instance, req)
    first_wall = time.monotonic() - started
    assert not ok  # dbx has no server
    for h in ("db1", "db2", "db3"):
        rec = latest_materialization(dagster_instance, BASE, h)
        assert rec is not None and rec.run_id == run_id, h
        meta = rec.asset_materialization.metadata
        assert meta["kind"].value == "full" and meta["to_lsn"].value > 0 and meta["backup_id"].value
    assert latest_materialization(dagster_instance, BASE, "dbx") is None
    ids = {
        latest_materialization(dagster_instance, BASE, h).asset_materialization.metadata["backup_id"].value
        for h in ("db1", "db2", "db3")
    }
    assert len(ids) == 3  # three backups, one per host entry

    # each host's step: its own start and end, run side by side (4 threads for 4 hosts)
    logs = dagster_instance.all_logs(run_id)
    spans: dict[str, list[float]] = {}
    for e in logs:
        step = e.step_key or ""
        kind = e.dagster_event.event_type if e.dagster_event else None
        if step.startswith("back_up_host[") and kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
            spans.setdefault(e.step_key, []).append(e.timestamp)
    spans = {k: v for k, v in spans.items() if len(v) == 2}  # started and succeeded
    assert sorted(spans) == ["back_up_host[db1]", "back_up_host[db2]", "back_up_host[db3]"]
    latest_start = max(v[0] for v in spans.values())
    earliest_end = min(v[1] for v in spans.values())
    assert latest_start < earliest_end, f"steps ran one after another: {spans} ({first_wall:.0f}s)"

    # dbx failed on its own step, retried once, and names its host and what to do
    failures = [e for e in logs if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["back_up_host[dbx]"]
    retries = [
        e.step_key for e in logs if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retries == ["back_up_host[dbx]"]

    # the checks: stored per host partition against this run, the blocking catalog check passed
    for check, key in (("catalog_integrity", BASE), ("base_freshness", BASE)):
        for h in ("db1", "db2", "db3"):
            (rec,) = dagster_instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(key, check), limit=5, partition_filter=PartitionKeyFilter(key=h)
            )
            assert rec.run_id == run_id and rec.event.dagster_event.event_specific_data.passed, (check, h)

    # the failure notification names the failed host
    run = dagster_instance.get_run_by_id(run_id)
    failure = next(e for e in logs if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_FAILURE)
    ctx = build_run_status_sensor_context(
        sensor_name="notify_on_failure",
        dagster_event=failure.dagster_event,
        dagster_instance=dagster_instance,
        dagster_run=run,
    ).for_run_failure()
    payload = failure_payload(ctx)
    assert payload["host"] == "dbx" and "dbx" in payload["text"] and payload["job"] == BATCH_JOB

    # 2. the next tick: incrementals for the hosts with a base, dbx still due a base
    req = _tick(defs, dagster_instance, datetime.now(UTC))
    planned = [(b["host"], b["kind"]) for b in req.run_config["ops"]["plan_batch"]["config"]["backups"]]
    assert planned == [("db1", "incremental"), ("db2", "incremental"), ("db3", "incremental"), ("dbx", "full")]
    run_id2, _ = _run(dagster_instance, req)
    for h in ("db1", "db2", "db3"):
        rec = latest_materialization(dagster_instance, INCREMENTAL, h)
        assert rec.run_id == run_id2 and rec.asset_materialization.metadata["parent_id"].value in ids
        (rpo,) = [
            r
            for r in dagster_instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(INCREMENTAL, RPO_CHECK), limit=5, partition_filter=PartitionKeyFilter(key=h)
            )
            if r.run_id == run_id2
        ]
        assert rpo.event.dagster_event.event_specific_data.passed
        (chain,) = dagster_instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(INCREMENTAL, "chain_restorable"), limit=5, partition_filter=PartitionKeyFilter(key=h)
        )
        meta = chain.event.dagster_event.event_specific_data.metadata
        assert chain.event.dagster_event.event_specific_data.passed and meta["chain_length"].value == 2
