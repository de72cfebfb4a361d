"""Asset checks: catalog integrity, restorable chains, verification results and RPO freshness.

Each is partitioned like its asset, so a breach is visible per host (or per host and day).
Integrity checks ask the host's worker for the catalog (`check --json`): the orchestrator
never needs access to the repository itself. Freshness is judged from Dagster's own
record of committed backups and is also re-evaluated every minute by the RPO sensor.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    EventLogRecord,
    MetadataValue,
    asset_check,
)

from ..core.config import Config
from ..core.errors import BackupPipelinesError
from .assets.backups import BASE_FAIL_WINDOW
from .keys import BASE, INCREMENTAL, OFFSITE, STAGING, VERIFICATION
from .partitions import host_partitions, restore_point_partitions
from .resources import BackupFleet

RPO_CHECK = "rpo_freshness"
BASE_AGE_CHECK = "base_freshness"


def latest_materialization(instance: DagsterInstance, key: AssetKey, partition: str) -> Any:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def latest_by_partition(instance: DagsterInstance, key: AssetKey) -> dict[str, EventLogRecord]:
    """The newest materialization of every partition of `key`: two queries, whatever the fleet size.

    What the schedules and the RPO sensor read on every tick; one query per host made a
    50-host tick of rpo_monitor outlast Dagster's 60 s sensor deadline under load.
    """
    ids = instance.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION)
    if not ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    return {r.partition_key: r for r in records if r.partition_key is not None}


def rpo_limit(cfg: Config, host: str) -> timedelta:
    return timedelta(minutes=2 * cfg.host(host).schedules.incremental_minutes)


def newest_point(incremental: EventLogRecord | None, base: EventLogRecord | None) -> EventLogRecord | None:
    """What the RPO judges: the newest incremental, or a newer base (a restorable point too)."""
    if base is not None and (incremental is None or base.timestamp > incremental.timestamp):
        return base
    return incremental


def judge_age(
    newest: EventLogRecord | None, limit: timedelta, now: datetime | None = None
) -> tuple[bool, dict[str, Any]]:
    """(passed, metadata) for 'the backup `newest` is younger than `limit`'."""
    now = now or datetime.now(UTC)
    meta: dict[str, Any] = {"limit_minutes": MetadataValue.float(limit.total_seconds() / 60)}
    if newest is None:
        meta["newest"] = MetadataValue.text("never")
        return False, meta
    age = now - datetime.fromtimestamp(newest.timestamp, UTC)
    meta["age_minutes"] = MetadataValue.float(round(age.total_seconds() / 60, 1))
    meta["newest_at"] = MetadataValue.timestamp(newest.timestamp)
    backup_id = newest.asset_materialization.metadata.get("backup_id") if newest.asset_materialization else None
    if backup_id is not None:
        meta["newest_backup_id"] = backup_id
    return age <= limit, meta


def freshness(
    instance: DagsterInstance, key: AssetKey, host: str, limit: timedelta, now: datetime | None = None
) -> tuple[bool, dict[str, Any]]:
    """(passed, metadata) for 'the newest committed backup of `host` is younger than `limit`'."""
    newest = latest_materialization(instance, key, host)
    if key == INCREMENTAL:
        newest = newest_point(newest, latest_materialization(instance, BASE, host))
    return judge_age(newest, limit, now)


def _catalog_report(fleet: BackupFleet, host: str) -> dict[str, Any]:
    return fleet.worker(host).run_json(["check", "--host", host, "--json"], ok_codes=(0, 4), timeout=600)


def catalog_integrity_of(fleet: BackupFleet, host: str) -> tuple[bool, dict[str, Any]]:
    try:
        report = _catalog_report(fleet, host)
    except BackupPipelinesError as err:
        return False, {"error": err.message}
    return not report["problems"], {
        "backups": report["backups"],
        "chains": report["chains"],
        "problems": MetadataValue.json(report["problems"][:50]),
    }


def chain_restorable_of(fleet: BackupFleet, host: str) -> tuple[bool, dict[str, Any]]:
    try:
        chain = _catalog_report(fleet, host).get("newest_chain") or {}
    except BackupPipelinesError as err:
        return False, {"error": err.message}
    return bool(chain.get("restorable")), {
        "chain": MetadataValue.json(chain.get("ids", [])),
        "chain_length": len(chain.get("ids", [])),
        "fetch_bytes": MetadataValue.int(int(chain.get("fetch_bytes", 0))),
        "problems": MetadataValue.json(chain.get("problems", [])),
    }


def build_checks(cfg: Config) -> list[AssetChecksDefinition]:
    hosts = host_partitions(cfg)
    points = restore_point_partitions(cfg)

    @asset_check(
        asset=BASE,
        name="catalog_integrity",
        partitions_def=hosts,
        blocking=True,
        description="Every completed backup of the host has its objects at the recorded size with a "
        "SHA-256, every incremental's parent exists and LSNs are contiguous from base to newest.",
    )
    def catalog_integrity(context: AssetCheckExecutionContext, fleet: BackupFleet) -> AssetCheckResult:
        passed, meta = catalog_integrity_of(fleet, context.partition_key)
        return AssetCheckResult(passed=passed, metadata=meta)

    @asset_check(
        asset=INCREMENTAL,
        name="chain_restorable",
        partitions_def=hosts,
        blocking=True,
        description="The newest point's chain (base + every incremental) resolves without gaps and "
        "all its objects are present: what a restore needs right now.",
    )
    def chain_restorable(context: AssetCheckExecutionContext, fleet: BackupFleet) -> AssetCheckResult:
        passed, meta = chain_restorable_of(fleet, context.partition_key)
        return AssetCheckResult(passed=passed, metadata=meta)

    @asset_check(
        asset=INCREMENTAL,
        name=RPO_CHECK,
        partitions_def=hosts,
        description="RPO: the host's newest committed backup is younger than twice its incremental "
        "interval (GOV.UK alerted at 15 minutes). Re-evaluated every minute by the rpo_monitor sensor.",
    )
    def rpo_freshness(context: AssetCheckExecutionContext, fleet: BackupFleet) -> AssetCheckResult:
        host = context.partition_key
        passed, meta = freshness(context.instance, INCREMENTAL, host, rpo_limit(fleet.config, host))
        return AssetCheckResult(passed=passed, metadata=meta)

    @asset_check(
        asset=BASE,
        name=BASE_AGE_CHECK,
        partitions_def=hosts,
        description="The host's newest base backup is younger than 28 hours (GOV.UK's threshold).",
    )
    def base_freshness(context: AssetCheckExecutionContext) -> AssetCheckResult:
        passed, meta = freshness(context.instance, BASE, context.partition_key, BASE_FAIL_WINDOW)
        return AssetCheckResult(passed=passed, metadata=meta)

    def _judge(context: AssetCheckExecutionContext, key: AssetKey) -> AssetCheckResult:
        record = latest_materialization(context.instance, key, context.partition_key)
        meta = record.asset_materialization.metadata if record and record.asset_materialization else {}
        passed_value = meta.get("passed")
        passed = bool(passed_value.value) if passed_value is not None else False
        return AssetCheckResult(
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={k: meta[k] for k in ("backup_id", "tables", "rows", "problems") if k in meta}
            or {"reason": "no report was recorded"},
        )

    @asset_check(
        asset=VERIFICATION,
        name="verification_passed",
        partitions_def=points,
        blocking=True,
        description="The restored sandbox started and every table passed CHECK TABLE.",
    )
    def verification_passed(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return _judge(context, VERIFICATION)

    @asset_check(
        asset=STAGING,
        name="staging_checks_passed",
        partitions_def=points,
        description="The staging server came back up on the restored data and every table checks.",
    )
    def staging_checks_passed(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return _judge(context, STAGING)

    checks = [
        catalog_integrity,
        chain_restorable,
        rpo_freshness,
        base_freshness,
        verification_passed,
        staging_checks_passed,
    ]
    if cfg.offsite is not None:

        @asset_check(
            asset=OFFSITE,
            name="offsite_verified",
            blocking=True,
            description="duplicity verify downloaded and decrypted every volume of the offsite chain.",
        )
        def offsite_verified(context: AssetCheckExecutionContext) -> AssetCheckResult:
            records = context.instance.fetch_materializations(OFFSITE, limit=1).records
            meta = records[0].asset_materialization.metadata if records and records[0].asset_materialization else {}
            passed = meta.get("verify_passed")
            return AssetCheckResult(
                passed=bool(passed.value) if passed is not None else False,
                metadata={k: meta[k] for k in ("verify", "sets", "last_full") if k in meta}
                or {"reason": "no offsite report was recorded"},
            )

        checks.append(offsite_verified)
    return checks
