"""The production instance for real: PostgreSQL storage, `dagster-daemon run`, real MariaDB hosts.

Two hosts on two throwaway servers: db2 backed up every minute (RPO 2 minutes, so this takes
minutes, not hours), db1 on the default 15 (its base materialized from the CLI beforehand).
The daemon's scheduler launches db2's base through the run queue (a batch run, a step per due
host), the rpo_monitor sensor turns
its freshness green, then db2's server goes away: its RPO check turns red within a minute of
the breach, written by the sensor (no run executes it), while db1 stays green.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from dagster import AssetCheckKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.event_log.base import PartitionKeyFilter

from backup_pipelines.defs.batch import BATCH_JOB, planned_hosts
from backup_pipelines.defs.checks import RPO_CHECK, latest_materialization
from backup_pipelines.defs.keys import BASE, INCREMENTAL
from tests.fixtures.daemon import Orchestrator, start_source, wait_for, write_fleet_config

pytestmark = [pytest.mark.dagster, pytest.mark.integration, pytest.mark.slow]
RPO_SECONDS = 120  # 2 x incremental_minutes


def _rpo_results(instance: DagsterInstance, host: str) -> list[tuple[bool, str, float, str | None]]:
    """(passed, run id, event time, step key) of each stored RPO result for the host, by event time."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(INCREMENTAL, RPO_CHECK), limit=100, partition_filter=PartitionKeyFilter(key=host)
    )
    out = []
    for r in reversed(records):
        if r.event is None or r.event.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
            continue  # planned by a run that has not evaluated it (yet)
        out.append((r.event.dagster_event.event_specific_data.passed, r.run_id, r.event.timestamp, r.event.step_key))
    return sorted(out, key=lambda r: r[2])


def _newest(instance: DagsterInstance, host: str):
    recs = [latest_materialization(instance, k, host) for k in (BASE, INCREMENTAL)]
    recs = [r for r in recs if r is not None]
    return max(recs, key=lambda r: r.timestamp) if recs else None


@pytest.fixture
def fleet(mariadb_template: Path, tmp_path: Path):
    sources = {}
    try:
        for h in ("db1", "db2"):
            sources[h] = start_source(mariadb_template, tmp_path / h)
        config = write_fleet_config(
            tmp_path / "config.yaml",
            sources,
            incremental_minutes=1,
            work=tmp_path,
            extra={"orchestration": {"retry_max": 1, "retry_delay_seconds": 1}},  # fail fast once db2 is gone
        )
        # db1 on the default 15 minutes (RPO 30): it must stay green however loaded the machine is
        doc = yaml.safe_load(config.read_text())
        doc["hosts"]["db1"]["schedules"]["incremental_minutes"] = 15
        config.write_text(yaml.safe_dump(doc))
        yield config, sources
    finally:
        for s in sources.values():
            s.server.stop()


@pytest.mark.timeout(1500)
def test_daemon_on_postgres_backs_up_and_turns_a_lost_host_red(fleet, postgres_db, tmp_path, monkeypatch):
    config, sources = fleet
    orch = Orchestrator(tmp_path / "home", config, postgres_db.env)
    for k, v in postgres_db.env.items():
        monkeypatch.setenv(k, v)
    # db1's base, materialized from the CLI into the same PostgreSQL instance before the daemon starts
    orch.dagster_cli("asset", "materialize", "--select", "mysql/base_backup", "--partition", "db1")
    orch.start_schedule("incremental_backups_every_1m")
    orch.dagster("sensor", "stop", "verify_after_base")  # restores are not under test here: spare the CPU
    started = time.monotonic()
    with orch, DagsterInstance.from_config(str(orch.home)) as instance:
        # 1. the scheduler's first tick: a base per host (none exists yet), through the run queue;
        #    db2's server goes away as soon as its base is committed
        wait_for("a base backup of db2", lambda: _newest(instance, "db2"), 240, orch, poll=1)
        sources["db2"].server.stop()
        newest = _newest(instance, "db2")
        breach = newest.timestamp + RPO_SECONDS
        # 2. rpo_monitor turns db2 green (after its first, never-backed-up red), then at the breach
        #    red again; a result is filed under the judged backup's run, so a newer verdict on the
        #    same backup replaces the older one: watch the newest result as it changes.
        seen: dict[str, list[tuple[bool, str, float, str | None]]] = {"db1": [], "db2": []}

        def progressed():
            for h in seen:
                latest = _rpo_results(instance, h)[-1:] or []
                if latest and (not seen[h] or seen[h][-1] != latest[0]):
                    seen[h].append(latest[0])
            greens = [r for r in seen["db2"] if r[0] and r[2] > newest.timestamp]
            reds = [r for r in seen["db2"] if not r[0] and greens and r[2] > greens[0][2]]
            return reds and seen["db1"] and seen["db1"][-1][0] and reds[0]

        red = wait_for("db2 green then red, and db1 green", progressed, 480, orch)
        _, run_id, at, step_key = red
        assert at - breach <= 75, f"red {at - breach:.0f}s after the breach (sensor every 60s)"
        assert step_key is None, "the red result was evaluated by a run's step, not by the sensor"
        assert run_id == newest.run_id  # filed under the run of the backup it judged ...
        judged = instance.get_run_record_by_id(run_id)
        assert judged.dagster_run.status == DagsterRunStatus.SUCCESS
        assert judged.end_time < at  # ... long finished: no run was executing when it turned red
        # 4. db1 stays green
        assert _rpo_results(instance, "db1")[-1][0], seen["db1"]
        # db2's freshness changed at least twice: (red, never backed up) -> green -> red
        statuses = [r[0] for r in seen["db2"]]
        assert statuses[-2:] == [True, False] or (True in statuses and statuses[-1] is False), seen["db2"]
        # the scheduler's ticks were batch runs (a step per due host) ...
        batches = instance.get_runs(RunsFilter(job_name=BATCH_JOB))
        assert judged.dagster_run.job_name == BATCH_JOB
        assert any("db2" in planned_hosts(r.run_config) and r.status == DagsterRunStatus.SUCCESS for r in batches)
        # ... and db1's base, materialized from the CLI, a run of its own
        db1_base = latest_materialization(instance, BASE, "db1")
        assert instance.get_run_by_id(db1_base.run_id).status == DagsterRunStatus.SUCCESS
        # the runs' own checks were stored too: db1's base from the per-host run, db2's from its step
        for host in ("db1", "db2"):
            integrity = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(BASE, "catalog_integrity"), limit=10, partition_filter=PartitionKeyFilter(key=host)
            )
            assert any(
                r.event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                and r.event.dagster_event.event_specific_data.passed
                for r in integrity
                if r.event
            ), host
    print(f"production instance test: {time.monotonic() - started:.0f}s, red {at - breach:.0f}s after breach")
