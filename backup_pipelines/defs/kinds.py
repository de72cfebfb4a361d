"""Asset kinds (the UI's badges) from what the fleet actually runs, not a fixed guess."""

from __future__ import annotations

from ..core.config import Config

TOOL = {"mariabackup": "mariabackup", "xtrabackup": "xtrabackup", "innobackupex": "xtrabackup"}
SERVER = {"mariabackup": "mariadb", "xtrabackup": "mysql", "innobackupex": "mysql"}


def physical_kinds(cfg: Config) -> set[str]:
    """The backup tools the hosts' engines use, and their servers (a mixed fleet shows both)."""
    engines = {h.engine for h in cfg.hosts.values()} or {"mariabackup"}
    return {TOOL[e] for e in engines} | {SERVER[e] for e in engines}


def server_kinds(cfg: Config) -> set[str]:
    """The database servers behind the hosts (restore points start one of these)."""
    return {SERVER[h.engine] for h in cfg.hosts.values()} or {"mariadb"}
