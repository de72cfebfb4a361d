"""Resources built from the same YAML config the CLI reads."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource

from ..core.config import Config, load_config
from ..core.transport import Worker, worker_for


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Config:
    return load_config(path)


def cached_config(path: str) -> Config:
    return _load(path, os.stat(path).st_mtime)


class BackupFleet(ConfigurableResource):  # type: ignore[type-arg]
    """The fleet as configured: hosts, where their commands run, staging targets."""

    config_path: str

    @property
    def config(self) -> Config:
        return cached_config(self.config_path)

    def worker(self, host: str) -> Worker:
        """Where `host`'s backups run: the database host itself."""
        return worker_for(host, self.config.host(host).transport, self.config_path)

    def verify_worker(self, host: str) -> Worker:
        """Where verification sandboxes for `host` run (a scratch machine, or locally)."""
        self.config.host(host)
        return worker_for(host, self.config.orchestration.verify_transport, self.config_path)

    def staging_worker(self, target: str, host: str) -> Worker:
        spec = self.config.staging[target].transport if target in self.config.staging else None
        return worker_for(host, spec or self.config.orchestration.verify_transport, self.config_path)

    def offsite_worker(self) -> Worker:
        """Where duplicity runs: next to a file repository, or any host for an S3 one."""
        off = self.config.offsite
        return worker_for("offsite", off.transport if off else None, self.config_path)  # type: ignore[arg-type]

    @property
    def repository_url(self) -> str:
        return self.config.repository.url


def fleet_from_path(path: str | Path) -> BackupFleet:
    return BackupFleet(config_path=str(Path(path).absolute()))
