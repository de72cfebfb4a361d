"""Scheduled backups of many hosts in one run: one step per host, one materialization per host.

One run per host per tick costs the orchestrator a run (a queue entry, a launch, a Python
start-up and a code load: ~3 CPU-s per host-backup measured by benchmarks/fleet.py) for a
step that only waits on the database host. Here a tick's due hosts share a run: `plan_batch`
fans out one `back_up_host` step per host, which the threaded executor runs side by side.
Each step is what a per-host run was, as seen in the UI:

- its own logs, duration, retries (the same retry policy, per host) and pool slot (`mysql_backups`);
- the host's partition of `mysql/base_backup` or `mysql/incremental_backup`, materialized with
  the same metadata, so the partition's history, the RPO sensor and `verify_after_base` read
  it as they read a per-host run's;
- the same checks, stored against that materialization: the blocking catalog check (a failed
  one fails the step) and the freshness check.

A failed host fails its step (and the run, which the failure notifier names host by host);
the others' backups are committed all the same.
"""

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, NamedTuple

import dagster as dg
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    DynamicOut,
    DynamicOutput,
    JobDefinition,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    job,
    op,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from ..core.config import Config
from .assets.backups import BASE_FAIL_WINDOW
from .checks import (
    BASE_AGE_CHECK,
    RPO_CHECK,
    catalog_integrity_of,
    chain_restorable_of,
    judge_age,
    latest_materialization,
    rpo_limit,
)
from .execution import refuse_past_dated, retry_policy, run_json
from .jobs import PHYSICAL_JOB
from .keys import AS_OF_TAG, BASE, HOST_TAG, INCREMENTAL, POOL
from .metadata import backup_metadata
from .resources import BackupFleet
from .threaded_executor import threaded_executor

BATCH_JOB = "physical_backup_batches"
BATCH_TAG = "backup-pipelines/batch"  # what a batch run holds: "base" or "incremental" and its schedule
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]

Kind = Literal["full", "incremental"]


class PlannedBackup(dg.Config):
    host: str
    kind: Kind


class BatchPlan(dg.Config):
    """The hosts a batch run backs up, each with the kind of backup it is due."""

    backups: list[PlannedBackup]


class DueBackup(NamedTuple):
    """What `plan_batch` hands each `back_up_host` step."""

    host: str
    kind: Kind


def mapping_key(host: str) -> str:
    """A step's key suffix: Dagster allows [A-Za-z0-9_] only; host names may hold '.' and '-'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", host)


def batch_run_config(due: list[tuple[str, Kind]], parallelism: int) -> dict[str, Any]:
    return {
        "ops": {"plan_batch": {"config": {"backups": [{"host": h, "kind": k} for h, k in due]}}},
        "execution": {"config": {"max_concurrent": parallelism}},
    }


def planned_hosts(run_config: dict[str, Any]) -> list[str]:
    backups = run_config.get("ops", {}).get("plan_batch", {}).get("config", {}).get("backups", [])
    return [b["host"] for b in backups]


def hosts_in_flight(instance: DagsterInstance, latest: dict[str, Any]) -> set[str]:
    """Hosts with a physical backup queued or running: a batch run's host that has not yet
    materialized in that run, or the host of a per-host run. `latest` is
    {host: newest materialization record} (base or incremental, whichever is newer)."""
    busy: set[str] = set()
    for run in instance.get_runs(RunsFilter(job_name=BATCH_JOB, statuses=IN_FLIGHT)):
        for host in planned_hosts(run.run_config):
            record = latest.get(host)
            if record is None or record.run_id != run.run_id:
                busy.add(host)
    for run in instance.get_runs(RunsFilter(job_name=PHYSICAL_JOB, statuses=IN_FLIGHT)):
        host = run.tags.get(HOST_TAG) or run.tags.get("dagster/partition")
        if host:
            busy.add(host)
    return busy


def batch_requests(
    cfg: Config,
    due: list[tuple[str, Kind]],
    *,
    tick: datetime,
    prefix: str,
    schedule: str,
) -> list[RunRequest]:
    """One run per `orchestration.batch_max_hosts` due hosts, tagged with the tick it is for."""
    o = cfg.orchestration
    size = o.batch_max_hosts
    chunks = [due[i : i + size] for i in range(0, len(due), size)]
    return [
        RunRequest(
            run_key=f"{prefix}-batch|{schedule}|{tick.isoformat()}|{n}",
            run_config=batch_run_config(chunk, o.batch_parallelism),
            tags={
                AS_OF_TAG: tick.isoformat(),
                BATCH_TAG: f"{prefix}/{schedule}",
                "backup-pipelines/hosts": str(len(chunk)),
            },
        )
        for n, chunk in enumerate(chunks)
    ]


def build_batch_job(cfg: Config) -> JobDefinition:
    timeout = cfg.orchestration.timeout_minutes * 60

    @op(out=DynamicOut(DueBackup), description="One output per due host: the batch's fan-out.")
    def plan_batch(context: OpExecutionContext, config: BatchPlan, fleet: BackupFleet) -> Iterator[DynamicOutput]:
        known = fleet.config.hosts
        unknown = sorted({b.host for b in config.backups} - set(known))
        if unknown:
            raise dg.Failure(
                description=f"batch names hosts that are not in the config: {', '.join(unknown)} (configured: "
                f"{', '.join(sorted(known))}); the config changed since the tick was planned: the next tick "
                "plans from the current one",
                allow_retries=False,
            )
        seen: set[str] = set()
        for b in config.backups:
            key = mapping_key(b.host)
            while key in seen:  # db-1 and db_1 are different hosts
                key += "_"
            seen.add(key)
            yield DynamicOutput(DueBackup(b.host, b.kind), mapping_key=key)
        context.log.info(f"{len(config.backups)} host(s) due: {', '.join(b.host for b in config.backups)}")

    @op(
        out={},  # what a step leaves is its materialization and checks, not a value
        pool=POOL,
        retry_policy=retry_policy(cfg),
        description="A base or incremental backup of one host, run by the CLI on that host; materializes "
        "the host's partition and its checks.",
    )
    def back_up_host(
        context: OpExecutionContext, fleet: BackupFleet, due: DueBackup
    ) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
        host, kind = due.host, due.kind
        key = BASE if kind == "full" else INCREMENTAL
        refuse_past_dated(context, fleet.config)
        entry = run_json(context, fleet.worker(host), ["backup", kind, "--host", host, "--json"], timeout=timeout)
        yield AssetMaterialization(asset_key=key, partition=host, metadata=backup_metadata(entry, fleet.repository_url))
        record = latest_materialization(context.instance, key, host)  # the one just stored
        target = AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
        )
        if key == BASE:
            integrity = ("catalog_integrity", *catalog_integrity_of(fleet, host))
            fresh = (BASE_AGE_CHECK, *judge_age(record, BASE_FAIL_WINDOW))
        else:
            integrity = ("chain_restorable", *chain_restorable_of(fleet, host))
            fresh = (RPO_CHECK, *judge_age(record, rpo_limit(fleet.config, host)))

        def evaluation(check: tuple[str, bool, dict[str, Any]], **severity: Any) -> AssetCheckEvaluation:
            name, passed, meta = check
            return AssetCheckEvaluation(
                asset_key=key,
                check_name=name,
                passed=passed,
                metadata=meta,
                partition=host,
                target_materialization_data=target,
                **severity,
            )

        # the freshness verdict is on the backup just written; the blocking check last, so a
        # failed catalog fails the step only after everything is recorded
        yield evaluation(fresh, severity=AssetCheckSeverity.WARN)
        yield evaluation(integrity, severity=AssetCheckSeverity.ERROR, blocking=True)

    @job(
        name=BATCH_JOB,
        executor_def=threaded_executor,
        description="Scheduled base or incremental backups of many hosts in one run: one step, one "
        "materialization and one set of checks per host (see backup_pipelines/defs/batch.py).",
    )
    def physical_backup_batches() -> None:
        plan_batch().map(back_up_host)

    return physical_backup_batches
