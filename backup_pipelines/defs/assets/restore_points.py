"""Restore points: verification in a sandbox and replays into staging, host x day, backfillable."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from ...core.config import Config
from ...core.errors import ExitCode
from ..binlog import POINT_TAG
from ..execution import retry_policy, run_json
from ..keys import BASE, INCREMENTAL, STAGING, VERIFICATION
from ..kinds import server_kinds
from ..metadata import verification_metadata
from ..partitions import HOST_DIM, parse_restore_point, point_in_time, restore_point_partitions
from ..resources import BackupFleet


def _point(context: AssetExecutionContext, cfg: Config) -> tuple[str, str, list[str]]:
    host, day = parse_restore_point(cfg, context.partition_key)
    exact = context.run.tags.get(POINT_TAG)  # a second chosen in the UI (binlog replay), else the day's end
    if exact:
        return host, day, ["--at", exact]
    at = point_in_time(cfg, day)
    return host, day, (["--at", at.isoformat()] if at else [])


def build_restore_point_assets(cfg: Config) -> list[AssetsDefinition]:
    points = restore_point_partitions(cfg)
    by_host = MultiToSingleDimensionPartitionMapping(partition_dimension_name=HOST_DIM)
    timeout = cfg.orchestration.timeout_minutes * 60

    @asset(
        key=VERIFICATION,
        deps=[AssetDep(BASE, partition_mapping=by_host), AssetDep(INCREMENTAL, partition_mapping=by_host)],
        partitions_def=points,
        group_name="restore_points",
        kinds=server_kinds(cfg),
        retry_policy=retry_policy(cfg),
        description="Proof of restorability: the host's newest backup as of the end of the day is restored "
        "into a sandbox, a throwaway server started on it, every table CHECKed, counted and checksummed. "
        "Backfill a range of days to verify history.",
    )
    def restore_verification(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host, day, at = _point(context, fleet.config)
        # A failed verification is still evidence: materialize the report, let the check judge it.
        report = run_json(
            context,
            fleet.verify_worker(host),
            ["verify", "--host", host, *at, "--json"],
            timeout=timeout,
            ok_codes=(0, int(ExitCode.VERIFY_FAILED)),
        )
        return MaterializeResult(metadata={"day": day, **verification_metadata(report)})

    @asset(
        key=STAGING,
        deps=[VERIFICATION],
        partitions_def=points,
        group_name="restore_points",
        kinds=server_kinds(cfg),
        description="Replays the host's backup as of the end of the day into its staging server (config "
        "staging:, which must say staging: true): stop, restore, start, check. Materialize one partition "
        "to restore 'db1 as of 2026-11-20' into staging.",
    )
    def staging_restore(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host, day, at = _point(context, fleet.config)
        target = staging_target_for(fleet.config, host)
        report = run_json(
            context,
            fleet.staging_worker(target, host),
            ["staging-restore", "--target", target, "--host", host, *at, "--json"],
            timeout=timeout,
            ok_codes=(0, int(ExitCode.VERIFY_FAILED)),
        )
        return MaterializeResult(metadata={"day": day, "staging_target": target, **verification_metadata(report)})

    return [restore_verification, staging_restore]


def staging_target_for(cfg: Config, host: str) -> str:
    """The staging target for `host`: one naming it as source_host, else the only general one."""
    from dagster import Failure

    named = [n for n, t in cfg.staging.items() if t.source_host == host]
    general = [n for n, t in cfg.staging.items() if t.source_host is None]
    choice = named or general
    if len(choice) != 1:
        raise Failure(
            description=f"no unique staging target for {host}: configure one staging: entry with "
            f"source_host: {host} (candidates: {', '.join(choice) or 'none'})",
            allow_retries=False,
        )
    return choice[0]
