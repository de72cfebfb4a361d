"""Jobs: what schedules and sensors launch. Asset checks on the selected assets run with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetSelection, define_asset_job

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..core.config import Config
from .keys import BASE, INCREMENTAL, STAGING, VERIFICATION

PHYSICAL_JOB = "physical_backups"
VERIFY_JOB = "restore_verification"
STAGING_JOB = "staging_restore"


def build_jobs(cfg: Config) -> dict[str, UnresolvedAssetJobDefinition]:
    return {
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
    }
