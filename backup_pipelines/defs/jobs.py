"""Jobs: what schedules and sensors launch. Asset checks on the selected assets run with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetSelection, define_asset_job

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..core.config import Config
from .keys import BASE, DUMP, INCREMENTAL, OFFSITE, RETENTION, STAGING, VERIFICATION

PHYSICAL_JOB = "physical_backups"
VERIFY_JOB = "restore_verification"
STAGING_JOB = "staging_restore"
DUMP_JOB = "logical_dumps"
RETENTION_JOB = "retention"
OFFSITE_JOB = "offsite_copy"


def build_jobs(cfg: Config) -> dict[str, UnresolvedAssetJobDefinition]:
    jobs = {
        PHYSICAL_JOB: define_asset_job(
            PHYSICAL_JOB,
            selection=AssetSelection.assets(BASE, INCREMENTAL),
            description="Base or incremental backups of one host (schedules pick which by asset selection).",
        ),
        VERIFY_JOB: define_asset_job(
            VERIFY_JOB,
            selection=AssetSelection.assets(VERIFICATION),
            description="Restore a host's point into a sandbox and check every table.",
        ),
        STAGING_JOB: define_asset_job(
            STAGING_JOB,
            selection=AssetSelection.assets(STAGING),
            description="Replay a host's point into its staging server.",
        ),
        DUMP_JOB: define_asset_job(
            DUMP_JOB,
            selection=AssetSelection.assets(DUMP),
            description="Nightly logical dump of one host.",
        ),
        RETENTION_JOB: define_asset_job(
            RETENTION_JOB,
            selection=AssetSelection.assets(RETENTION),
            description="Apply one host's retention policy (requested after each passing verification).",
        ),
    }
    if cfg.offsite is not None:
        jobs[OFFSITE_JOB] = define_asset_job(
            OFFSITE_JOB,
            selection=AssetSelection.assets(OFFSITE),
            description="The nightly duplicity copy of the repository.",
        )
    return jobs
