"""Per-host run limits that know what a run backs up: the run queue's tags, added at submit.

Dagster's run queue limits runs by tag. `dagster/partition` alone would make a host's nightly
dump wait for (or hold up) its incrementals, although they never touch each other; a base and
an incremental of one host must never overlap. So every submitted run, whoever launched it
(schedule, sensor, backfill or a click in the UI), gets one tag per kind of work it does on a
host, and deploy/dagster.yaml limits each tag to one run per value:

- `backup-pipelines/physical-host`: base and incremental backups (one chain per host),
- `backup-pipelines/dump-host`: logical dumps,
- `backup-pipelines/restore-host`: restore verifications and staging restores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dagster import AssetKey, DagsterRun
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

from .keys import BASE, DUMP, HOST_TAG, INCREMENTAL, STAGING, VERIFICATION

PHYSICAL_HOST_TAG = "backup-pipelines/physical-host"
DUMP_HOST_TAG = "backup-pipelines/dump-host"
RESTORE_HOST_TAG = "backup-pipelines/restore-host"

_KIND_BY_ASSET: dict[AssetKey, str] = {
    BASE: PHYSICAL_HOST_TAG,
    INCREMENTAL: PHYSICAL_HOST_TAG,
    DUMP: DUMP_HOST_TAG,
    VERIFICATION: RESTORE_HOST_TAG,
    STAGING: RESTORE_HOST_TAG,
}
# Runs of a whole job (launchpad, no asset selection on the run) name their assets by job.
_ASSETS_BY_JOB: dict[str, tuple[AssetKey, ...]] = {
    "physical_backups": (BASE, INCREMENTAL),
    "logical_dumps": (DUMP,),
    "restore_verification": (VERIFICATION,),
    "staging_restore": (STAGING,),
}


def _host(tags: Mapping[str, str]) -> str | None:
    if tags.get(HOST_TAG):
        return tags[HOST_TAG]
    if tags.get("dagster/partition/host"):
        return tags["dagster/partition/host"]
    partition = tags.get("dagster/partition")
    if partition and "|" not in partition:
        return partition
    return None


def host_limit_tags(
    tags: Mapping[str, str], asset_selection: Iterable[AssetKey] | None, job_name: str
) -> dict[str, str]:
    """The concurrency tags a run needs: {kind tag: host} for each kind of work it selects."""
    host = _host(tags)
    if host is None:
        return {}
    selected = list(asset_selection) if asset_selection else list(_ASSETS_BY_JOB.get(job_name, ()))
    return {_KIND_BY_ASSET[k]: host for k in selected if k in _KIND_BY_ASSET}


class HostAwareRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that tags each run with the host it works on, per kind of work."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        extra = host_limit_tags(run.tags, run.asset_selection, run.job_name)
        missing = {k: v for k, v in extra.items() if run.tags.get(k) != v}
        if missing:
            self._instance.add_run_tags(run.run_id, missing)
            run = run.with_tags({**run.tags, **missing})
            context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
