"""Backup tools behind one interface per family: physical (xbstream) and logical (dumps)."""

from __future__ import annotations

from ..config import HostConfig
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
    "parse_checkpoints",
    "parse_tool_info",
]


def engine_for(host: HostConfig) -> PhysicalEngine:
    return ENGINES[host.engine](host)
