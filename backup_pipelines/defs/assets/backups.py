"""Physical backups: a nightly base and incrementals every few minutes, per host partition."""

from datetime import timedelta

from dagster import AssetExecutionContext, AssetsDefinition, FreshnessPolicy, MaterializeResult, asset

from ...core.config import Config
from ..execution import refuse_past_dated, retry_policy, run_json
from ..keys import BASE, INCREMENTAL, POOL
from ..kinds import physical_kinds
from ..metadata import backup_metadata
from ..partitions import host_partitions
from ..resources import BackupFleet

# GOV.UK's passive checks: 28 hours for the base; the incremental limit is per host (2x its interval).
BASE_FAIL_WINDOW = timedelta(hours=28)


def build_backup_assets(cfg: Config) -> list[AssetsDefinition]:
    hosts = host_partitions(cfg)
    kinds = physical_kinds(cfg)
    timeout = cfg.orchestration.timeout_minutes * 60
    shortest = min((h.schedules.incremental_minutes for h in cfg.hosts.values()), default=15)

    @asset(
        key=BASE,
        partitions_def=hosts,
        group_name="physical_backups",
        kinds=kinds,
        pool=POOL,
        retry_policy=retry_policy(cfg),
        freshness_policy=FreshnessPolicy.time_window(fail_window=BASE_FAIL_WINDOW, warn_window=timedelta(hours=25)),
        description="Nightly full (base) physical backup of the host, streamed as xbstream -> zstd -> "
        "AES-256-GCM into the repository by the backup tool on the database host.",
    )
    def base_backup(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host = context.partition_key
        refuse_past_dated(context, fleet.config)
        entry = run_json(context, fleet.worker(host), ["backup", "full", "--host", host, "--json"], timeout=timeout)
        return MaterializeResult(metadata=backup_metadata(entry, fleet.repository_url))

    @asset(
        key=INCREMENTAL,
        deps=[BASE],
        partitions_def=hosts,
        group_name="physical_backups",
        kinds=kinds,
        pool=POOL,
        retry_policy=retry_policy(cfg),
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=2 * shortest), warn_window=timedelta(minutes=1.5 * shortest)
        ),
        description="Incremental physical backup from the newest completed backup's to_lsn; every few "
        "minutes (hosts.*.schedules.incremental_minutes).",
    )
    def incremental_backup(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host = context.partition_key
        refuse_past_dated(context, fleet.config)
        entry = run_json(
            context, fleet.worker(host), ["backup", "incremental", "--host", host, "--json"], timeout=timeout
        )
        return MaterializeResult(metadata=backup_metadata(entry, fleet.repository_url))

    return [base_backup, incremental_backup]
