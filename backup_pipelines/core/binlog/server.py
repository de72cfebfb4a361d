"""Talking to the source server about its binlogs: the list of files and fetching one over replication.

`mariadb-binlog --read-from-remote-server --raw` reads a file through the replication
protocol, so the archiver needs only REPLICATION SLAVE (plus BINLOG MONITOR for
`SHOW BINARY LOGS`) and works where the binlog directory is not readable to it. The
password reaches the tool through a private option file, never argv.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pymysql

from ..config import HostConfig
from ..credentials import defaults_extra_file
from ..dumps import connect
from ..errors import ConfigError, ToolError
from ..process import run

GROUPS = ("client", "mariadb-binlog", "mysqlbinlog")
GRANTS = "RELOAD, PROCESS, BINLOG MONITOR, REPLICATION SLAVE"


def binlog_tool() -> str:
    found = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
    if not found:
        raise ConfigError("cannot find mariadb-binlog (or mysqlbinlog) on PATH", hint="apt install mariadb-client")
    return found


def connection_args(h: HostConfig) -> list[str]:
    if h.socket is not None:
        return [f"--socket={h.socket}"]
    return [f"--host={h.host or '127.0.0.1'}", f"--port={h.port or 3306}", "--protocol=TCP"]


def server_binlogs(h: HostConfig, host: str) -> tuple[int, list[tuple[str, int]]]:
    """(server_id, [(file, size)]) as the server lists them now."""
    try:
        with connect(h.user, h.password_file, socket=h.socket, host=h.host, port=h.port) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@server_id, @@log_bin")
            sid, log_bin = cur.fetchone()
            if not int(log_bin):
                raise ConfigError(
                    f"host {host} does not write binary logs", host=host, hint="set log-bin and server-id and restart"
                )
            cur.execute("SHOW BINARY LOGS")
            files = [(str(r[0]), int(r[1])) for r in cur.fetchall()]
    except pymysql.err.OperationalError as err:
        code = err.args[0] if err.args else 0
        hint = (
            f"grant the archiver {GRANTS} ON *.* (see docs/pitr.md)"
            if code in (1227, 1045, 1142)
            else "check that the server is up and the host's socket/host/port in the config"
        )
        raise ToolError(f"cannot list the binary logs of host {host}: {err.args[-1]}", host=host, hint=hint) from None
    return int(sid), files


def fetch_file(h: HostConfig, host: str, file: str, dest_dir: Path, work_dir: Path) -> Path:
    """Copy one binlog file, as it is now, into dest_dir over the replication protocol."""
    with defaults_extra_file(h.user, h.password_file, host=host, work_dir=work_dir, groups=GROUPS) as creds:
        cmd = [
            binlog_tool(),
            f"--defaults-extra-file={creds}",
            "--read-from-remote-server",
            "--raw",
            f"--result-file={dest_dir}/",
            *connection_args(h),
            file,
        ]
        run(cmd, what=f"fetching binlog {file} of host {host}", host=host)
    return dest_dir / file
