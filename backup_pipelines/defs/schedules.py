"""Schedules: nightly bases and N-minute incrementals, grouped by (cron, time zone).

One schedule per distinct timing, not per host: 200 hosts on the defaults are two
schedules. Each tick requests one batch run for its due hosts (a step per host, see
batch.py), or with `orchestration.schedule_runs: per_host` one run per host. A host
that has never had a base backup gets a base instead of an incremental that could only fail.
"""

import re
from collections import defaultdict
from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..core.config import Config
from .batch import Kind, batch_requests, hosts_in_flight
from .checks import latest_by_partition, newest_point
from .keys import AS_OF_TAG, BASE, HOST_TAG, INCREMENTAL


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _groups(cfg: Config, attr: str) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, h in sorted(cfg.hosts.items()):
        groups[(getattr(h.schedules, attr), h.schedules.timezone)].append(name)
    return groups


def _nightly_schedule(
    name: str,
    cron: str,
    tz: str,
    hosts: list[str],
    job: "UnresolvedAssetJobDefinition",
    *,
    what: str,
    prefix: str,
    asset_selection: list[AssetKey] | None = None,
) -> ScheduleDefinition:
    """One run per host at each tick, tagged with the tick (the time the backup is for)."""

    @schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=tz,
        job=job,
        description=f"Nightly {what} of {', '.join(hosts)} ({cron}, {tz}).",
    )
    def nightly(context: ScheduleEvaluationContext) -> list[RunRequest]:
        tick = context.scheduled_execution_time
        return [
            RunRequest(
                run_key=f"{prefix}|{h}|{tick.isoformat()}",
                partition_key=h,
                asset_selection=asset_selection,
                tags={AS_OF_TAG: tick.isoformat(), HOST_TAG: h},
            )
            for h in hosts
        ]

    return nightly


def _incremental_schedule(
    name: str, cron: str, tz: str, minutes: int, hosts: list[str], job: "UnresolvedAssetJobDefinition"
) -> ScheduleDefinition:
    @schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=tz,
        job=job,
        description=f"Incremental backups of {', '.join(hosts)} every {minutes} minutes ({tz}).",
    )
    def incremental_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        tick = context.scheduled_execution_time
        bases = latest_by_partition(context.instance, BASE)
        requests = []
        for h in hosts:
            has_base = h in bases
            requests.append(
                RunRequest(
                    run_key=f"{'incr' if has_base else 'base'}|{h}|{tick.isoformat()}",
                    partition_key=h,
                    asset_selection=[INCREMENTAL if has_base else BASE],
                    tags={AS_OF_TAG: tick.isoformat(), HOST_TAG: h},
                )
            )
        return requests

    return incremental_schedule


def _batched_incremental_schedule(
    cfg: Config, name: str, cron: str, tz: str, minutes: int, hosts: list[str], job: JobDefinition
) -> ScheduleDefinition:
    @schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=tz,
        job=job,
        description=f"Incremental backups of {', '.join(hosts)} every {minutes} minutes ({tz}), the due "
        "hosts of a tick in one run (a step per host). A host still busy with its previous backup "
        "is left to the next tick; a host without a base gets one.",
    )
    def batched_incremental_schedule(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        tick = context.scheduled_execution_time
        bases = latest_by_partition(context.instance, BASE)
        incrementals = latest_by_partition(context.instance, INCREMENTAL)
        newest = {h: newest_point(incrementals.get(h), bases.get(h)) for h in hosts}
        busy = hosts_in_flight(context.instance, newest)
        due: list[tuple[str, Kind]] = [(h, "incremental" if h in bases else "full") for h in hosts if h not in busy]
        skipped = sorted(set(hosts) & busy)
        if skipped:
            context.log.info(f"still running their previous backup, left to the next tick: {', '.join(skipped)}")
        if not due:
            return SkipReason(f"every host is still running its previous backup: {', '.join(skipped)}")
        return batch_requests(cfg, due, tick=tick, prefix="incr", schedule=name)

    return batched_incremental_schedule


def _batched_base_schedule(
    cfg: Config, name: str, cron: str, tz: str, hosts: list[str], job: JobDefinition
) -> ScheduleDefinition:
    @schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=tz,
        job=job,
        description=f"Nightly base backups of {', '.join(hosts)} ({cron}, {tz}), in one run (a step per host).",
    )
    def batched_base_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        # Every host, busy or not: a host finishing an incremental holds its lock for seconds,
        # and the step's retries wait for it; skipping would lose the night's base.
        due: list[tuple[str, Kind]] = [(h, "full") for h in hosts]
        return batch_requests(cfg, due, tick=context.scheduled_execution_time, prefix="base", schedule=name)

    return batched_base_schedule


def _offsite_schedule(cron: str, tz: str, job: "UnresolvedAssetJobDefinition") -> ScheduleDefinition:
    @schedule(
        name="offsite_copy",
        cron_schedule=cron,
        execution_timezone=tz,
        job=job,
        description=f"The nightly duplicity copy of the repository ({cron}, {tz}).",
    )
    def offsite_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        tick = context.scheduled_execution_time
        return RunRequest(run_key=f"offsite|{tick.isoformat()}", tags={AS_OF_TAG: tick.isoformat()})

    return offsite_schedule


def build_schedules(
    cfg: Config,
    physical_job: "UnresolvedAssetJobDefinition",
    dump_job: "UnresolvedAssetJobDefinition | None" = None,
    offsite_job: "UnresolvedAssetJobDefinition | None" = None,
    batch_job: JobDefinition | None = None,
) -> list[ScheduleDefinition]:
    """The schedules of the fleet; base and incremental ones launch batch runs when
    `orchestration.schedule_runs` is "batched" (and `batch_job` is given), else a run per host."""
    schedules: list[ScheduleDefinition] = []
    many_zones = len({h.schedules.timezone for h in cfg.hosts.values()}) > 1
    batched = batch_job is not None and cfg.orchestration.schedule_runs == "batched"

    def named(stem: str, groups: dict[tuple[str, str], list[str]], cron: str, tz: str) -> str:
        return stem + (f"_{_slug(cron)}" if len(groups) > 1 else "") + (f"_{_slug(tz)}" if many_zones else "")

    base_groups = _groups(cfg, "base_cron")
    for (cron, tz), hosts in base_groups.items():
        name = named("base_backups", base_groups, cron, tz)
        if batched:
            schedules.append(_batched_base_schedule(cfg, name, cron, tz, hosts, batch_job))  # type: ignore[arg-type]
            continue
        schedules.append(
            _nightly_schedule(
                name, cron, tz, hosts, physical_job, what="base backups", prefix="base", asset_selection=[BASE]
            )
        )
    for (cron, tz), hosts in _groups(cfg, "incremental_cron").items():
        minutes = cfg.hosts[hosts[0]].schedules.incremental_minutes
        name = f"incremental_backups_every_{minutes}m" + (f"_{_slug(tz)}" if many_zones else "")
        if batched:
            schedules.append(_batched_incremental_schedule(cfg, name, cron, tz, minutes, hosts, batch_job))  # type: ignore[arg-type]
        else:
            schedules.append(_incremental_schedule(name, cron, tz, minutes, hosts, physical_job))
    if dump_job is not None:
        dump_groups = _groups(cfg, "dump_cron")
        for (cron, tz), hosts in dump_groups.items():
            schedules.append(
                _nightly_schedule(
                    named("logical_dumps", dump_groups, cron, tz),
                    cron,
                    tz,
                    hosts,
                    dump_job,
                    what="logical dumps",
                    prefix="dump",
                )
            )
    if offsite_job is not None and cfg.offsite is not None:
        schedules.append(_offsite_schedule(cfg.offsite.cron, cfg.offsite.timezone, offsite_job))
    return schedules
