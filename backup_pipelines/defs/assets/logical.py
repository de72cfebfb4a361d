"""Logical dumps (nightly, automysqlbackup-style) and retention (applied after a passing verification)."""

from datetime import UTC, datetime

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from ...core.config import Config
from ...core.errors import ExitCode
from ..execution import refuse_past_dated, retry_policy, run_json
from ..keys import AS_OF_TAG, BASE, DUMP, OFFSITE, POOL, RETENTION, VERIFICATION
from ..kinds import server_kinds
from ..partitions import HOST_DIM, host_partitions
from ..resources import BackupFleet


def build_logical_assets(cfg: Config) -> list[AssetsDefinition]:
    hosts = host_partitions(cfg)
    timeout = cfg.orchestration.timeout_minutes * 60

    @asset(
        key=DUMP,
        partitions_def=hosts,
        group_name="logical_dumps",
        kinds=server_kinds(cfg) | {"sql"},
        pool=POOL,
        retry_policy=retry_policy(cfg),
        description="Nightly logical dump (mysqldump: one file per database plus schema and grants; or "
        "mydumper), compressed, encrypted and catalogued as kind `dump`; rotated daily/weekly/monthly.",
    )
    def logical_dump(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host = context.partition_key
        refuse_past_dated(context, fleet.config)
        as_of = context.run.tags.get(AS_OF_TAG)
        for_date = (datetime.fromisoformat(as_of) if as_of else datetime.now(UTC)).date().isoformat()
        entry = run_json(
            context,
            fleet.worker(host),
            ["backup", "dump", "--host", host, "--for-date", for_date, "--json"],
            timeout=timeout,
        )
        stored, source = int(entry["size_bytes"]), int(entry["source_size_bytes"])
        return MaterializeResult(
            metadata={
                "backup_id": entry["id"],
                "engine": entry["engine"],
                "for_date": for_date,
                "databases": MetadataValue.json(entry.get("databases") or []),
                "objects": len(entry["objects"]),
                "stored_mib": MetadataValue.float(round(stored / 2**20, 3)),
                "sql_mib": MetadataValue.float(round(source / 2**20, 3)),
                "duration_seconds": MetadataValue.float(float(entry["duration_seconds"])),
                "repository": fleet.repository_url,
            }
        )

    @asset(
        key=RETENTION,
        deps=[
            AssetDep(
                VERIFICATION,
                partition_mapping=MultiToSingleDimensionPartitionMapping(partition_dimension_name=HOST_DIM),
            )
        ],
        partitions_def=hosts,
        group_name="restore_points",
        pool=POOL,
        description="Applies the host's retention policy (physical chains and dump rotation) after a passing "
        "verification; never deletes an ancestor of a kept point, the newest verified chain, or a backup a "
        "running restore is reading.",
    )
    def retention(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        host = context.partition_key
        report = run_json(context, fleet.worker(host), ["prune", "--host", host, "--apply", "--json"], timeout=timeout)
        phys, dumps = report["physical"], report["dumps"]
        return MaterializeResult(
            metadata={
                "deleted": MetadataValue.json(report["deleted"]),
                "deleted_count": len(report["deleted"]),
                "freed_mib": MetadataValue.float(round((phys["delete_bytes"] + dumps["delete_bytes"]) / 2**20, 3)),
                "kept_physical": len(phys["keep"]),
                "kept_dumps": len(dumps["keep"]),
                "skipped_leased": MetadataValue.json(report["skipped_leased"]),
            }
        )

    return [logical_dump, retention]


def build_offsite_assets(cfg: Config) -> list[AssetsDefinition]:
    """The nightly duplicity copy of the whole repository (only when `offsite:` is configured)."""
    if cfg.offsite is None:
        return []
    timeout = cfg.orchestration.timeout_minutes * 60

    @asset(
        key=OFFSITE,
        deps=[BASE, DUMP],
        group_name="offsite",
        kinds={"duplicity", "gpg"},
        retry_policy=retry_policy(cfg),
        description="Nightly encrypted copy of the repository to an independent location with duplicity "
        "(incremental between fulls, remove-older-than retention), verified after every run; "
        "records collection-status.",
    )
    def offsite_copy(context: AssetExecutionContext, fleet: BackupFleet) -> MaterializeResult:
        refuse_past_dated(context, fleet.config)
        report = run_json(
            context,
            fleet.offsite_worker(),
            ["offsite", "backup", "--json"],
            timeout=timeout,
            ok_codes=(0, int(ExitCode.VERIFY_FAILED)),
        )
        st = report["status"]
        newest = report.get("newest_set") or {}
        return MaterializeResult(
            metadata={
                "target": report["target"],
                "verify_passed": MetadataValue.bool(bool(report["verify"]["passed"])),
                "verify": report["verify"]["message"],
                "set_type": newest.get("type", "-"),
                "chains": st["chain_count"],
                "sets": st["set_count"],
                "volumes": st["volume_count"],
                "last_full": st.get("last_full") or "-",
                "source_mib": MetadataValue.float(round(report["source_bytes"] / 2**20, 3)),
                "backup_seconds": MetadataValue.float(float(report["backup_seconds"])),
                "duration_seconds": MetadataValue.float(float(report["seconds"])),
                "collection_status": MetadataValue.json(st["chains"]),
            }
        )

    return [offsite_copy]
