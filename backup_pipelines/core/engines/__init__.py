"""Backup tools behind one interface per family: physical (xbstream) and logical (dumps)."""

from __future__ import annotations

from pathlib import Path

from ..config import HostConfig
from ..errors import ConfigError
from .base import (
    SUCCESS_MARKER,
    BinlogPosition,
    Checkpoints,
    PhysicalEngine,
    ToolInfo,
    parse_checkpoints,
    parse_tool_info,
)
from .innobackupex import InnobackupexEngine
from .mariabackup import MariabackupEngine
from .xtrabackup import XtrabackupEngine

ENGINES: dict[str, type[PhysicalEngine]] = {
    "mariabackup": MariabackupEngine,
    "xtrabackup": XtrabackupEngine,
    "innobackupex": InnobackupexEngine,
}

__all__ = [
    "ENGINES",
    "SUCCESS_MARKER",
    "BinlogPosition",
    "Checkpoints",
    "PhysicalEngine",
    "ToolInfo",
    "engine_for",
    "engine_named",
    "parse_checkpoints",
    "parse_tool_info",
]


def engine_for(host: HostConfig) -> PhysicalEngine:
    return ENGINES[host.engine](host)


def engine_named(name: str, host: HostConfig | None) -> PhysicalEngine:
    """The engine that took a backup (its manifest's `engine`), to restore it with.

    A host may have moved to another engine since, or be gone from the config (disaster
    recovery of a decommissioned host): then the tool's default binaries on PATH are used,
    and only settings that do not name a binary (prepare_memory) are kept from the host.
    """
    if name not in ENGINES:
        raise ConfigError(
            f"backups taken with engine {name!r} cannot be restored by this version (known: {', '.join(ENGINES)})",
            hint="upgrade backup-pipelines on this machine",
        )
    if host is not None and host.engine == name:
        return ENGINES[name](host)
    settings = {"engine": name, "datadir": Path("/nonexistent"), "host": "localhost"}
    if host is not None:
        settings["prepare_memory"] = host.prepare_memory
    return ENGINES[name](HostConfig.model_validate(settings))
