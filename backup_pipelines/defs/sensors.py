"""Sensors: verify after every new base, watch the RPO every minute, and shout on failures."""

import json
import logging
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dagster import (
    AddDynamicPartitionsRequest,
    AssetCheckEvaluation,
    AssetKey,
    AssetRecordsFilter,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    EventLogRecord,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.instance.utils import RUNLESS_JOB_NAME
from sqlalchemy.exc import IntegrityError

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..core.config import Config, read_secret_file
from .assets.backups import BASE_FAIL_WINDOW
from .checks import BASE_AGE_CHECK, RPO_CHECK, judge_age, latest_by_partition, newest_point, rpo_limit
from .keys import BASE, HOST_TAG, INCREMENTAL, VERIFICATION
from .partitions import RESTORE_DAYS, fleet_timezone, fleet_today, restore_point_key, window_changes
from .resources import BackupFleet

log = logging.getLogger(__name__)
PARTITION_TAG = "dagster/partition"
RESTATE_SECONDS = 3600  # re-emit an unchanged freshness result hourly, so the UI shows it is current


def _new_materializations(context: SensorEvaluationContext, key: AssetKey) -> list[EventLogRecord]:
    """The asset's materializations since the sensor's cursor (a storage id), oldest first."""
    after = int(context.cursor) if context.cursor else None
    return context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=200, ascending=True
    ).records


def build_restore_window(cfg: Config) -> SensorDefinition:
    @sensor(
        name="restore_window",
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
        description="Keeps the restore points' day partitions (restore_days) to the last "
        "orchestration.restore_window_days days of the fleet's time zone: adds today, drops what "
        "retention no longer keeps. Every process reads the same set from the instance.",
    )
    def restore_window(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        existing = context.instance.get_dynamic_partitions(RESTORE_DAYS)
        add, delete = window_changes(cfg, existing, fleet_today(cfg))
        if not add and not delete:
            return SkipReason("restore window is current")
        requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
        if add:
            requests.append(AddDynamicPartitionsRequest(RESTORE_DAYS, add))
        if delete:
            requests.append(DeleteDynamicPartitionsRequest(RESTORE_DAYS, delete))
        return SensorResult(dynamic_partitions_requests=requests)

    return restore_window


def build_verify_after_base(cfg: Config, verify_job: "UnresolvedAssetJobDefinition") -> SensorDefinition:
    tz = ZoneInfo(fleet_timezone(cfg))

    @sensor(
        name="verify_after_base",
        job=verify_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a restore verification of the host's newest point after each new base backup.",
    )
    def verify_after_base(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        records = _new_materializations(context, BASE)
        if not records:
            return SkipReason("no new base backups")
        requests = []
        days: set[str] = set()
        for r in records:
            host = r.partition_key
            if host not in cfg.hosts:
                continue
            day = datetime.fromtimestamp(r.timestamp, tz).date().isoformat()
            days.add(day)
            # The plain partition tag, not partition_key=MultiPartitionKey: Dagster would add its
            # deprecated per-dimension tags (dagster/partition/<dim>); the assets parse either form.
            requests.append(
                RunRequest(
                    run_key=f"verify|{host}|{r.storage_id}",
                    tags={PARTITION_TAG: str(restore_point_key(host, day)), HOST_TAG: host},
                )
            )
        missing = sorted(days - set(context.instance.get_dynamic_partitions(RESTORE_DAYS)))
        return SensorResult(
            run_requests=requests,
            cursor=str(records[-1].storage_id),
            dynamic_partitions_requests=[AddDynamicPartitionsRequest(RESTORE_DAYS, missing)] if missing else None,
        )

    return verify_after_base


def build_prune_after_verification(cfg: Config, retention_job: "UnresolvedAssetJobDefinition") -> SensorDefinition:
    @sensor(
        name="prune_after_verification",
        job=retention_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Applies a host's retention policy after each passing restore verification, so "
        "pruning never runs on a fleet whose newest chain is unproven.",
    )
    def prune_after_verification(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        records = _new_materializations(context, VERIFICATION)
        if not records:
            return SkipReason("no new verifications")
        requests = []
        for r in records:
            meta = r.asset_materialization.metadata if r.asset_materialization else {}
            passed = meta.get("passed")
            key = r.partition_key or ""
            host = next((p for p in key.split("|") if p in cfg.hosts), None)
            if host and passed is not None and passed.value is True:
                requests.append(
                    RunRequest(run_key=f"prune|{host}|{r.storage_id}", partition_key=host, tags={HOST_TAG: host})
                )
        return SensorResult(run_requests=requests, cursor=str(records[-1].storage_id))

    return prune_after_verification


def evaluate_freshness(
    context: SensorEvaluationContext, cfg: Config, now: datetime | None = None
) -> tuple[list[tuple[AssetCheckEvaluation, EventLogRecord | None]], dict[str, Any]]:
    """Per-host RPO and base-age results, each with the backup it judged; only changes (or
    hourly restatements) are emitted. The newest backups of the whole fleet are read in one
    pass (four queries), not per host."""
    now = now or datetime.now(UTC)
    state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
    incrementals = latest_by_partition(context.instance, INCREMENTAL)
    bases = latest_by_partition(context.instance, BASE)
    events = []
    for host in sorted(cfg.hosts):
        base = bases.get(host)
        for key, check, limit, newest in (
            (INCREMENTAL, RPO_CHECK, rpo_limit(cfg, host), newest_point(incrementals.get(host), base)),
            (BASE, BASE_AGE_CHECK, BASE_FAIL_WINDOW, base),
        ):
            passed, meta = judge_age(newest, limit, now)
            slot = f"{check}|{host}"
            prev = state.get(slot)
            if prev is None or prev[0] != passed or now.timestamp() - prev[1] >= RESTATE_SECONDS:
                target = (
                    AssetCheckEvaluationTargetMaterializationData(
                        storage_id=newest.storage_id, run_id=newest.run_id, timestamp=newest.timestamp
                    )
                    if newest is not None
                    else None
                )
                evaluation = AssetCheckEvaluation(
                    asset_key=key,
                    check_name=check,
                    passed=passed,
                    partition=host,
                    metadata=meta,
                    target_materialization_data=target,
                )
                events.append((evaluation, newest))
                state[slot] = [passed, now.timestamp()]
    return events, state


def record_freshness(
    instance: DagsterInstance, results: list[tuple[AssetCheckEvaluation, EventLogRecord | None]]
) -> int:
    """Store each result against the run that wrote the backup it judged; returns how many stored.

    Dagster keeps one row per (asset, check, run id, partition) and stores every runless result
    under the empty run id, so a host's second runless result (its first status change) would
    violate that key and fail the whole tick, forever. Filed under the judged backup's run, a
    result updates that run's row for the check instead: the check's history keeps one entry per
    backup, the newest verdict on it. No run is launched; the sensor writes the event itself. Only
    a host with no backup run at all is recorded runless, once (later changes keep its red).
    """
    stored = 0
    for evaluation, newest in results:
        run_id = newest.run_id if newest is not None else ""
        if run_id:
            job_name = newest.event_log_entry.job_name if newest is not None else None
            event = DagsterEvent(
                event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
                event_specific_data=evaluation,
                job_name=job_name or RUNLESS_JOB_NAME,
            )
            instance.report_dagster_event(event, run_id=run_id)
            stored += 1
            continue
        try:
            instance.report_runless_asset_event(evaluation)
            stored += 1
        except IntegrityError:
            log.warning(
                "%s of %s: Dagster already holds a runless result for this partition and keeps only one; "
                "the check shows that first result until the host's next backup run",
                evaluation.check_name,
                evaluation.partition,
            )
    return stored


def build_rpo_monitor(cfg: Config) -> SensorDefinition:
    @sensor(
        name="rpo_monitor",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Every minute: is each host's newest backup within its RPO (2x the incremental "
        "interval) and its base younger than 28h? Breaches turn the per-host freshness checks red.",
    )
    def rpo_monitor(context: SensorEvaluationContext) -> SensorResult:
        results, state = evaluate_freshness(context, cfg)
        record_freshness(context.instance, results)
        for evaluation, _ in results:
            context.log.info(
                f"{evaluation.check_name} {evaluation.partition}: {'passed' if evaluation.passed else 'FAILED'}"
            )
        return SensorResult(cursor=json.dumps(state))

    return rpo_monitor


def failure_payload(context: RunFailureSensorContext) -> dict[str, Any]:
    """Slack-compatible JSON: host, assets, run id and the error's first line. Never secrets."""
    run = context.dagster_run
    tags = run.tags
    step_failures = context.get_step_failure_events()
    # A batch run has no host tag: its failed steps name theirs (run_json puts it in the metadata).
    failed_hosts = sorted(
        {
            str(meta["host"].value)
            for f in step_failures
            if f.step_failure_data
            and f.step_failure_data.user_failure_data
            and "host" in (meta := f.step_failure_data.user_failure_data.metadata)
        }
    )
    host = (
        tags.get(HOST_TAG)
        or tags.get("dagster/partition/host")
        or tags.get("dagster/partition")
        or ", ".join(failed_hosts)
        or "-"
    )
    assets = sorted("/".join(k.path) for k in (run.asset_selection or set()))
    message = context.failure_event.message or ""
    if step_failures:
        data = step_failures[0].step_failure_data
        if data and data.error:
            message = data.error.message
        if data and data.user_failure_data and data.user_failure_data.description:
            message = data.user_failure_data.description
    first = next((line.strip() for line in message.splitlines() if line.strip()), "run failed")
    what = f"hosts {host}" if len(failed_hosts) > 1 and host == ", ".join(failed_hosts) else f"host {host}"
    if len(step_failures) > 1:
        first += f" (and {len(step_failures) - 1} more failed step(s))"
    text = f":red_circle: backup-pipelines: {run.job_name} failed for {what} (run {run.run_id}): {first}"
    return {
        "text": text,
        "host": host,
        "job": run.job_name,
        "assets": assets,
        "run_id": run.run_id,
        "error": first,
    }


def build_failure_notifier(cfg: Config, fleet: BackupFleet) -> SensorDefinition:
    @run_failure_sensor(
        name="notify_on_failure",
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts failed runs to the configured webhook (Slack-compatible JSON).",
    )
    def notify_on_failure(context: RunFailureSensorContext) -> None:
        n = fleet.config.notifications
        url = read_secret_file(n.webhook_url_file, "webhook URL") if n.webhook_url_file else None
        if not url:
            context.log.info("no notifications.webhook_url_file configured; not posting")
            return
        body = json.dumps(failure_payload(context)).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    return notify_on_failure
