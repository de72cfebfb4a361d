"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

The config is $BACKUP_PIPELINES_CONFIG; without it, the embedded defaults: a demo estate
under $BACKUP_PIPELINES_DEMO_DIR (default .demo/dagster) with a local encrypted
repository and one host, `demo`, whose throwaway MariaDB starts on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions

from .core.config import CONFIG_ENV, load_config
from .defs.assets.backups import build_backup_assets
from .defs.assets.logical import build_logical_assets, build_offsite_assets
from .defs.assets.restore_points import build_restore_point_assets
from .defs.binlog import build_binlog_assets, build_binlog_checks, build_binlog_job, build_binlog_schedules
from .defs.checks import build_checks
from .defs.jobs import DUMP_JOB, OFFSITE_JOB, PHYSICAL_JOB, RETENTION_JOB, VERIFY_JOB, build_jobs
from .defs.resources import fleet_from_path
from .defs.schedules import build_schedules
from .defs.sensors import (
    build_failure_notifier,
    build_prune_after_verification,
    build_rpo_monitor,
    build_verify_after_base,
)

DEMO_DIR_ENV = "BACKUP_PIPELINES_DEMO_DIR"


def build_definitions(config_path: str | Path) -> Definitions:
    cfg = load_config(config_path)
    fleet = fleet_from_path(config_path)
    jobs = build_jobs(cfg)
    binlog_job = build_binlog_job()
    return Definitions(
        assets=[
            *build_backup_assets(cfg),
            *build_restore_point_assets(cfg),
            *build_logical_assets(cfg),
            *build_offsite_assets(cfg),
            *build_binlog_assets(cfg),
        ],
        asset_checks=[*build_checks(cfg), *build_binlog_checks(cfg)],
        jobs=[*jobs.values(), binlog_job],
        schedules=[
            *build_schedules(cfg, jobs[PHYSICAL_JOB], jobs[DUMP_JOB], jobs.get(OFFSITE_JOB)),
            *build_binlog_schedules(cfg, binlog_job),
        ],
        sensors=[
            build_verify_after_base(cfg, jobs[VERIFY_JOB]),
            build_rpo_monitor(cfg),
            build_prune_after_verification(cfg, jobs[RETENTION_JOB]),
            build_failure_notifier(cfg, fleet),
        ],
        resources={"fleet": fleet},
    )


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    from .demo import ensure_demo_environment

    return ensure_demo_environment(Path(os.environ.get(DEMO_DIR_ENV, ".demo/dagster")), start_server=False)


defs = build_definitions(default_config_path())
