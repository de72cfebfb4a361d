"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

Importing this module starts and reads nothing: `defs` is a lazy `@definitions` entry point
that Dagster calls when it loads the location. It builds the definitions from the config
named by $BACKUP_PIPELINES_CONFIG; `./dev dagster` (or `backup-pipelines demo-env up`)
starts the demo estate and sets that variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, definitions, in_process_executor

from .core.config import CONFIG_ENV, load_config
from .defs.accepted_previews import accepted_previews
from .defs.assets.backups import build_backup_assets
from .defs.assets.logical import build_logical_assets, build_offsite_assets
from .defs.assets.restore_points import build_restore_point_assets
from .defs.batch import build_batch_job
from .defs.binlog import build_binlog_assets, build_binlog_checks, build_binlog_job, build_binlog_schedules
from .defs.checks import build_checks
from .defs.jobs import DUMP_JOB, OFFSITE_JOB, PHYSICAL_JOB, RETENTION_JOB, VERIFY_JOB, build_jobs
from .defs.resources import fleet_from_path
from .defs.schedules import build_schedules
from .defs.sensors import (
    build_failure_notifier,
    build_prune_after_verification,
    build_restore_window,
    build_rpo_monitor,
    build_verify_after_base,
)


def build_definitions(config_path: str | Path) -> Definitions:
    with accepted_previews():
        return _build(config_path)


def _build(config_path: str | Path) -> Definitions:
    cfg = load_config(config_path)
    fleet = fleet_from_path(config_path)
    jobs = build_jobs(cfg)
    binlog_job = build_binlog_job()
    batch_job = build_batch_job(cfg)
    return Definitions(
        assets=[
            *build_backup_assets(cfg),
            *build_restore_point_assets(cfg),
            *build_logical_assets(cfg),
            *build_offsite_assets(cfg),
            *build_binlog_assets(cfg),
        ],
        asset_checks=[*build_checks(cfg), *build_binlog_checks(cfg)],
        jobs=[*jobs.values(), binlog_job, batch_job],
        schedules=[
            *build_schedules(cfg, jobs[PHYSICAL_JOB], jobs[DUMP_JOB], jobs.get(OFFSITE_JOB), batch_job),
            *build_binlog_schedules(cfg, binlog_job),
        ],
        sensors=[
            build_restore_window(cfg),
            build_verify_after_base(cfg, jobs[VERIFY_JOB]),
            build_rpo_monitor(cfg),
            build_prune_after_verification(cfg, jobs[RETENTION_JOB]),
            build_failure_notifier(cfg, fleet),
        ],
        resources={"fleet": fleet},
        # Every op shells out to the worker CLI, which does the work in its own processes on the
        # database host: a step subprocess per op (the multiprocess default) isolates nothing and
        # costs each run another Python start-up (~2 CPU-s measured by benchmarks/fleet.py).
        executor=in_process_executor,
    )


class ConfigNotSet(RuntimeError):
    """The code location was loaded without $BACKUP_PIPELINES_CONFIG."""


def config_path_from_env() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if not env:
        raise ConfigNotSet(
            f"{CONFIG_ENV} is not set: the code location needs the fleet's config file. Set "
            f"{CONFIG_ENV}=/etc/backup-pipelines/config.yaml (or wherever it lives) in the environment of "
            "the webserver, the daemon and the code server; for the demo estate run `./dev dagster`, "
            "which starts it and sets the variable (or export "
            f"{CONFIG_ENV}=$(backup-pipelines demo-env up))."
        )
    return Path(env)


@definitions
def defs() -> Definitions:
    return build_definitions(config_path_from_env())
