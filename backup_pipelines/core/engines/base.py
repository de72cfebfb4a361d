"""The physical-backup engine interface: one flag family, three tools.

mariabackup, XtraBackup 8 and legacy innobackupex all stream xbstream, write
`xtrabackup_checkpoints` to `--extra-lsndir`, take incrementals from an LSN and
print `completed OK!` as their last word. They differ in how a chain is
prepared and copied back; each engine only builds argv lists, so every flag is
unit-testable where the binary is absent, and running them is the caller's job.
"""

from __future__ import annotations

import re
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..config import HostConfig
from ..errors import ConfigError

SUCCESS_MARKER = "completed OK!"


@dataclass(frozen=True)
class Checkpoints:
    backup_type: str
    from_lsn: int
    to_lsn: int
    last_lsn: int | None


@dataclass(frozen=True)
class BinlogPosition:
    file: str
    position: int
    gtid: str | None = None


@dataclass(frozen=True)
class ToolInfo:
    tool_version: str | None
    server_version: str | None
    binlog: BinlogPosition | None


def parse_key_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def parse_checkpoints(text: str) -> Checkpoints:
    kv = parse_key_values(text)
    try:
        return Checkpoints(
            backup_type=kv.get("backup_type", "unknown"),
            from_lsn=int(kv["from_lsn"]),
            to_lsn=int(kv["to_lsn"]),
            last_lsn=int(kv["last_lsn"]) if kv.get("last_lsn") else None,
        )
    except (KeyError, ValueError) as err:
        raise ValueError(f"malformed xtrabackup_checkpoints ({err}): {text[:200]!r}") from None


_BINLOG_RE = re.compile(
    r"filename '(?P<file>[^']+)', position '?(?P<pos>\d+)'?(?:, GTID of the last change '(?P<gtid>[^']*)')?"
)


def parse_binlog_pos(value: str) -> BinlogPosition | None:
    m = _BINLOG_RE.search(value)
    if not m:
        return None
    return BinlogPosition(m["file"], int(m["pos"]), m["gtid"] or None)


def parse_tool_info(text: str) -> ToolInfo:
    """Parse `xtrabackup_info` (same keys for all three tools)."""
    kv = parse_key_values(text)
    binlog = parse_binlog_pos(kv.get("binlog_pos", ""))
    return ToolInfo(kv.get("tool_version") or None, kv.get("server_version") or None, binlog)


class PhysicalEngine(ABC):
    """Builds the argv of every step of a physical backup and restore."""

    name: str
    default_binary: str
    default_stream_binary: str
    stream_format = "xbstream"

    def __init__(self, host: HostConfig) -> None:
        self.host = host

    @property
    def binary(self) -> str:
        return self.host.binary or self.default_binary

    @property
    def stream_binary(self) -> str:
        return self.host.stream_binary or self.default_stream_binary

    def resolve(self, binary: str) -> str:
        """Absolute path of a binary, or a clear error naming what is missing."""
        found = shutil.which(binary)
        if not found:
            raise ConfigError(
                f"{self.name}: cannot find {binary!r} on PATH",
                command=binary,
                hint=f"install it (Debian: {self.package_hint}) or set binary:/stream_binary: "
                "for the host in the config",
            )
        return found

    package_hint = "mariadb-backup"

    def connection_args(self) -> list[str]:
        h = self.host
        args: list[str] = []
        if h.socket is not None:
            args.append(f"--socket={h.socket}")
        if h.host is not None:
            args.append(f"--host={h.host}")
        if h.port is not None:
            args.append(f"--port={h.port}")
        return args

    def backup_command(self, *, defaults_file: Path, lsn_dir: Path, incremental_lsn: int | None) -> list[str]:
        """Stream a backup to stdout (incremental from `incremental_lsn` when given)."""
        cmd = [
            self.binary,
            f"--defaults-extra-file={defaults_file}",  # must come first
            "--backup",
            "--stream=xbstream",
            f"--datadir={self.host.datadir}",
            f"--target-dir={lsn_dir}",
            f"--extra-lsndir={lsn_dir}",
            *self.connection_args(),
        ]
        if self.host.parallel > 1:
            cmd.append(f"--parallel={self.host.parallel}")
        cmd += self.throttle_args()
        if incremental_lsn is not None:
            cmd.append(f"--incremental-lsn={incremental_lsn}")
        return cmd + list(self.host.extra_backup_args)

    def throttle_args(self) -> list[str]:
        """The engine's own read throttle (all three tools spell it --throttle=IOPS)."""
        iops = self.host.throttle.engine_iops
        return [f"--throttle={iops}"] if iops is not None else []

    def extract_command(self, target_dir: Path) -> list[str]:
        return [self.stream_binary, "-x", "-C", str(target_dir)]

    @abstractmethod
    def prepare_commands(self, base_dir: Path, incremental_dirs: list[Path]) -> list[list[str]]:
        """The whole prepare sequence: base, then each incremental in order.

        Step i reads link i of the chain (0 the base) and steps past the last link read the
        whole chain: restore awaits exactly those extractions before running a step. No step
        after step i reads incremental link i again: restore deletes it once step i is done.
        """

    def copy_back_command(self, prepared_dir: Path, datadir: Path, scratch_dir: Path) -> list[str]:
        """Move a prepared backup into an empty `datadir`."""
        return [self.binary, "--no-defaults", "--move-back", f"--target-dir={prepared_dir}", f"--datadir={datadir}"]

    def version_command(self) -> list[str]:
        return [self.binary, "--version"]
