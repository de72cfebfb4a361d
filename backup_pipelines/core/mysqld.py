"""Throwaway MariaDB/MySQL servers: verification sandboxes, the demo, and the tests.

A sandbox server reads no option files (`--no-defaults`), listens only on its own
socket (plus a loopback port where asked), and is always stopped, killed if it
must be, when its block exits.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

from .errors import ToolError, tail
from .process import capture


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_binary(name: str | None) -> str:
    for candidate in [name] if name else ["mariadbd", "mysqld"]:
        found = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        for d in ("/usr/sbin", "/usr/libexec"):
            if not found and os.path.exists(os.path.join(d, candidate)):
                found = os.path.join(d, candidate)
        if found:
            return found
    raise ToolError(
        f"cannot find the database server binary ({name or 'mariadbd or mysqld'})",
        hint="install mariadb-server (Debian) or set server_binary: for the host",
    )


_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes with its NUL; keep a margin


def _run_as_args() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []


class MariaDBServer:
    """One mariadbd process on a datadir of our own."""

    def __init__(
        self,
        datadir: Path,
        run_dir: Path | None = None,
        *,
        port: int | None = None,
        binary: str | None = None,
        log_bin: bool = False,
        skip_grant_tables: bool = False,
        server_id: int = 1,
        buffer_pool: str = "128M",
        extra_args: list[str] | None = None,
    ) -> None:
        self.datadir = Path(datadir)
        self.run_dir = Path(run_dir) if run_dir else self.datadir.parent / (self.datadir.name + ".run")
        self.port = port
        self.binary = binary
        self.log_bin = log_bin
        self.skip_grant_tables = skip_grant_tables
        self.server_id = server_id
        self.buffer_pool = buffer_pool
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        """`<run_dir>/mysqld.sock`, or a short stand-in named after run_dir when that path is too long.

        A unix socket path holds at most 107 bytes: deep work dirs (sandboxes under test temp
        dirs, long work_dir settings) would make mariadbd refuse to start.
        """
        path = self.run_dir / "mysqld.sock"
        if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha256(os.fsencode(self.run_dir.absolute())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"bp-mysqld-{digest}.sock"

    @property
    def log_error(self) -> Path:
        return self.run_dir / "error.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "mysqld.pid"

    def error_log_tail(self, lines: int = 15) -> str:
        try:
            return tail(self.log_error.read_text(errors="replace"), lines)
        except OSError:
            return ""

    @staticmethod
    def initialize(datadir: Path, *, install_binary: str | None = None) -> None:
        """Create an empty datadir whose root account authenticates by OS user (unix_socket)."""
        datadir = Path(datadir)
        datadir.mkdir(parents=True, exist_ok=True)
        binary = install_binary or shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if not binary:
            raise ToolError("cannot find mariadb-install-db", hint="apt install mariadb-server")
        # A private tmpdir: every mariadbd deletes the `#sql*` files of its tmpdir at start-up, so
        # servers sharing /tmp remove each other's temporary tables (seen as a failed bootstrap).
        tmpdir = datadir.with_name(datadir.name + ".tmp")
        tmpdir.mkdir(exist_ok=True)
        cmd = [
            binary,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--tmpdir={tmpdir}",
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={getpass.getuser()}",
            "--skip-test-db",
            *_run_as_args(),
        ]
        res = capture(cmd, what="initialising a datadir", timeout=600)
        if res.returncode != 0:
            raise ToolError(
                "mariadb-install-db failed",
                command=" ".join(cmd),
                stderr_tail=tail(res.stderr or res.stdout),
            )

    def command(self) -> list[str]:
        cmd = [
            _server_binary(self.binary),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.log_error}",
            f"--tmpdir={self.tmp_dir}",  # private: see initialize()
            f"--innodb-buffer-pool-size={self.buffer_pool}",
            f"--server-id={self.server_id}",
            "--innodb-fast-shutdown=1",
            *_run_as_args(),
        ]
        if self.port:
            cmd += [f"--port={self.port}", "--bind-address=127.0.0.1"]
        else:
            cmd.append("--skip-networking")
        if self.log_bin:
            cmd += [f"--log-bin={self.datadir / 'binlog'}", "--binlog-format=ROW"]
        if self.skip_grant_tables:
            cmd.append("--skip-grant-tables")
        return cmd + self.extra_args

    @property
    def tmp_dir(self) -> Path:
        return self.run_dir / "tmp"

    def start(self, timeout: float = 90) -> MariaDBServer:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToolError(
                    f"the database server on {self.datadir} exited during start-up (status {self.proc.returncode})",
                    command=" ".join(self.command()),
                    stderr_tail=self.error_log_tail(),
                    hint="read the error log above; a restored datadir that cannot start is not a backup",
                )
            if self.socket.exists():
                try:
                    self.connect().close()
                    return self
                except pymysql.err.OperationalError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise ToolError(
            f"the database server on {self.datadir} did not accept connections within {timeout:.0f}s",
            stderr_tail=self.error_log_tail(),
        )

    def stop(self, timeout: float = 120) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def connect(self, database: str | None = None, **kw: Any) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=str(self.socket),
            user=kw.pop("user", getpass.getuser()),
            database=database,
            autocommit=kw.pop("autocommit", True),
            connect_timeout=5,
            **kw,
        )

    def sql(self, statement: str, args: Any = None, database: str | None = None) -> list[tuple[Any, ...]]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())

    def __enter__(self) -> MariaDBServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
