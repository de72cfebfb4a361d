"""Logical dump engines: mysqldump (one file per database, as automysqlbackup) and mydumper.

Like the physical engines they only build argv lists. Connection options come from the
host config; credentials from the same 0600 option file ([client], [mysqldump],
[mydumper], [myloader] groups).
"""

from __future__ import annotations

import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from ..config import HostConfig
from ..errors import ConfigError

DUMP_COMPLETED = b"-- Dump completed"


def _first_on_path(*names: str) -> str:
    for n in names:
        if shutil.which(n):
            return n
    return names[0]


def connection_args(
    host: HostConfig | None = None, *, socket: Path | None = None, hostname: str | None = None, port: int | None = None
) -> list[str]:
    if host is not None:
        socket, hostname, port = host.socket, host.host, host.port
    args = []
    if socket is not None:
        args.append(f"--socket={socket}")
    if hostname is not None:
        args.append(f"--host={hostname}")
    if port is not None:
        args.append(f"--port={port}")
    return args


class DumpEngine(ABC):
    name: str
    #: the object names of one dump, relative to the backup prefix
    single_stream: bool

    def __init__(self, host: HostConfig) -> None:
        self.host = host
        self.settings = host.dump

    def resolve(self, binary: str, package: str) -> str:
        found = shutil.which(binary)
        if not found:
            raise ConfigError(
                f"{self.name}: cannot find {binary!r} on PATH",
                command=binary,
                hint=f"install it (Debian: apt install {package}) or set hosts.*.dump.binary",
            )
        return found

    @abstractmethod
    def load_command(self, defaults_file: Path, conn: list[str], **kw: object) -> list[str]:
        """The loader's argv."""


class MysqldumpEngine(DumpEngine):
    name = "mysqldump"
    single_stream = False

    @property
    def binary(self) -> str:
        return self.settings.binary or _first_on_path("mariadb-dump", "mysqldump")

    @property
    def client(self) -> str:
        return self.settings.loader_binary or _first_on_path("mariadb", "mysql")

    def _base(self, cnf: Path) -> list[str]:
        return [self.binary, f"--defaults-extra-file={cnf}", *connection_args(self.host)]

    def database_command(self, cnf: Path, database: str) -> list[str]:
        """A consistent (--single-transaction) dump of one database with its routines, events, triggers."""
        return [
            *self._base(cnf),
            "--single-transaction",
            "--quick",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--no-tablespaces",
            "--databases",
            database,
        ]

    def schema_command(self, cnf: Path, databases: list[str]) -> list[str]:
        """Schema only, every database in one file: what automysqlbackup kept as the full schema."""
        return [
            *self._base(cnf),
            "--no-data",
            "--routines",
            "--events",
            "--triggers",
            "--no-tablespaces",
            "--databases",
            *databases,
        ]

    def grants_command(self, cnf: Path) -> list[str]:
        """Users and grants as portable CREATE USER / GRANT statements (MariaDB 10.2.37+);
        --insert-ignore so loading onto a server that has some of the users does not fail."""
        return [*self._base(cnf), "--system=users", "--insert-ignore"]

    def load_command(self, defaults_file: Path, conn: list[str], **kw: object) -> list[str]:
        return [self.client, f"--defaults-extra-file={defaults_file}", *conn, "--batch"]


class MydumperEngine(DumpEngine):
    """mydumper writes a directory (one file per table, in parallel); it is stored as one tar stream."""

    name = "mydumper"
    single_stream = True

    @property
    def binary(self) -> str:
        return self.settings.binary or "mydumper"

    @property
    def loader(self) -> str:
        return self.settings.loader_binary or "myloader"

    def dump_command(self, cnf: Path, out_dir: Path, database: str) -> list[str]:
        """One database per run, under `timeout`: mydumper 0.10 with --regex and >=2 threads can
        deadlock forever on its work queue; with --database it has not been seen to."""
        cmd = [
            self.binary,
            f"--defaults-file={cnf}",
            *connection_args(self.host),
            f"--outputdir={out_dir}",
            f"--threads={self.settings.threads}",
            "--trx-consistency-only",
            "--triggers",
            "--events",
            "--routines",
            f"--database={database}",
        ]
        return ["timeout", "--kill-after=30", str(int(self.settings.timeout_minutes * 60)), *cmd]

    def load_command(self, defaults_file: Path, conn: list[str], **kw: object) -> list[str]:
        cmd = [
            self.loader,
            f"--defaults-file={defaults_file}",
            *conn,
            f"--directory={kw['directory']}",
            "--overwrite-tables",
            f"--threads={self.settings.threads}",
        ]
        database = kw["database"]
        return [*cmd, f"--source-db={database}", f"--database={database}"]


def dump_engine_for(host: HostConfig) -> DumpEngine:
    return MydumperEngine(host) if host.dump.engine == "mydumper" else MysqldumpEngine(host)


def parse_mydumper_metadata(text: str) -> dict[str, str]:
    """Binlog coordinates from mydumper's `metadata` file (`Log: ...`, `Pos: ...`, `GTID:...`)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*(Log|Pos|GTID):\s*(.*)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out
