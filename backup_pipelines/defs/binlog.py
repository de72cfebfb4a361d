"""Binlog archiving in Dagster: the per-host archive asset, its freshness check, the push schedule.

The asset is materialized by `binlog push` (hosts whose archiver is `push` get a schedule on
`binlog.push_cron`); its metadata plots the latest restorable time. The freshness check asks
the worker for `binlog status` (so it judges a `binlog stream` host too): it fails when the
latest restorable time is older than `binlog.rpo_seconds` (default 60) or at once on a gap.
"""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    asset_check,
    define_asset_job,
    schedule,
)

from ..core.config import Config
from ..core.errors import BackupPipelinesError, ExitCode
from .execution import run_json
from .partitions import host_partitions
from .resources import BackupFleet

BINLOG = AssetKey(["mysql", "binlog_archive"])
BINLOG_JOB = "binlog_push"
BINLOG_CHECK = "binlog_freshness"
POINT_TAG = "backup-pipelines/at"  # a staging restore (or verification) to this second, e.g. 2026-12-02T05:10:07Z


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def judge(status: dict[str, Any], rpo_seconds: int, now: datetime | None = None) -> tuple[bool, dict[str, Any]]:
    """(passed, metadata) for 'the latest restorable time is within the RPO and there is no gap'."""
    now = now or datetime.now(UTC)
    latest = _ts(status.get("latest_restorable"))
    meta: dict[str, Any] = {
        "rpo_seconds": MetadataValue.int(rpo_seconds),
        "gaps": MetadataValue.json(status.get("gaps", [])),
    }
    if latest is None:
        meta["latest_restorable"] = MetadataValue.text("never")
        return False, meta
    behind = max(0.0, now.timestamp() - latest)
    meta["seconds_behind"] = MetadataValue.float(round(behind, 1))
    meta["latest_restorable"] = MetadataValue.timestamp(latest)
    return behind <= rpo_seconds and not status.get("gaps"), meta


def build_binlog_assets(cfg: Config) -> list[AssetsDefinition]:
    @asset(
        key=BINLOG,
        partitions_def=host_partitions(cfg),
        group_name="binlogs",
        kinds={"mariadb"},
        description="The host's archived binary logs (`binlog push`): what makes every second since the "
        "oldest retained backup restorable. Metadata: the latest restorable time and gaps.",
    )
    def binlog_archive(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host = context.partition_key
        res = run_json(
            context,
            fleet.worker(host),
            ["binlog", "push", "--host", host, "--json"],
            timeout=600,
            ok_codes=(0, int(ExitCode.INTEGRITY)),
        )
        latest = _ts(res.get("latest_restorable"))
        meta: dict[str, Any] = {
            "segments_archived": MetadataValue.int(len(res.get("archived", []))),
            "gaps": MetadataValue.json(res.get("gaps", [])),
            "gap_count": MetadataValue.int(len(res.get("gaps", []))),
        }
        if latest is not None:
            meta["latest_restorable"] = MetadataValue.timestamp(latest)
            meta["latest_restorable_epoch"] = MetadataValue.float(latest)  # plotted over time
        return MaterializeResult(metadata=meta)

    return [binlog_archive]


def build_binlog_checks(cfg: Config) -> list[AssetChecksDefinition]:
    @asset_check(
        asset=BINLOG,
        name=BINLOG_CHECK,
        partitions_def=host_partitions(cfg),
        description="Point-in-time RPO: the latest restorable time (what the archiver vouches for) is "
        "younger than the host's binlog.rpo_seconds (default 60 s); any binlog gap fails it at once.",
    )
    def binlog_freshness(context: AssetCheckExecutionContext, fleet: BackupFleet) -> AssetCheckResult:
        host = context.partition_key
        try:
            status = fleet.worker(host).run_json(
                ["binlog", "status", "--host", host, "--json"], ok_codes=(0, 4), timeout=300
            )
        except BackupPipelinesError as err:
            return AssetCheckResult(passed=False, metadata={"error": err.message})
        passed, meta = judge(status, fleet.config.host(host).binlog.rpo_seconds)
        return AssetCheckResult(passed=passed, metadata=meta)

    return [binlog_freshness]


def build_binlog_job() -> Any:
    return define_asset_job(
        BINLOG_JOB, selection=AssetSelection.assets(BINLOG), description="Archive one host's new binlog bytes."
    )


def build_binlog_schedules(cfg: Config, job: Any) -> list[ScheduleDefinition]:
    """One schedule per push cron, for the hosts whose archiver is `push` (not those that stream)."""
    by_cron: dict[str, list[str]] = {}
    for name, h in cfg.hosts.items():
        if h.binlog.archiver == "push":
            by_cron.setdefault(h.binlog.push_cron, []).append(name)
    out = []
    for i, (cron, hosts) in enumerate(sorted(by_cron.items())):

        def _make(i: int, cron: str, hosts: list[str]) -> Any:
            @schedule(
                name="binlog_push" + (f"_{i}" if i else ""),
                cron_schedule=cron,
                job=job,
                execution_timezone="UTC",
                description=f"binlog push for {', '.join(hosts)} (hosts without binlog stream)",
            )
            def binlog_push_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
                stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
                return [RunRequest(run_key=f"binlog-{h}-{stamp}", partition_key=h) for h in hosts]

            return binlog_push_schedule

        out.append(_make(i, cron, hosts))
    return out
