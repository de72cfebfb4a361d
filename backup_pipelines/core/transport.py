"""Running the CLI on a worker (database) host: locally, or over SSH with a per-host key.

The backup pipeline must run where the datadir is, so backup bytes never cross the
orchestrator. The orchestrator only sends a command line and gets JSON back: the same
`backup-pipelines ... --json` an operator would type on that host. A remote failure
comes back as the same typed error (by exit code) with the remote message.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import LocalTransport, SSHTransport
from .errors import (
    BackupPipelinesError,
    ConfigError,
    ExitCode,
    IntegrityError,
    LockedError,
    NotFoundError,
    RefusedError,
    StorageError,
    ToolError,
    TransportError,
    VerificationFailed,
    tail,
)
from .process import kill_group, killable

log = logging.getLogger(__name__)

_BY_CODE: dict[int, type[BackupPipelinesError]] = {
    ExitCode.USAGE: ConfigError,
    ExitCode.NOT_FOUND: NotFoundError,
    ExitCode.INTEGRITY: IntegrityError,
    ExitCode.TOOL_FAILED: ToolError,
    ExitCode.STORAGE: StorageError,
    ExitCode.VERIFY_FAILED: VerificationFailed,
    ExitCode.REFUSED: RefusedError,
    ExitCode.LOCKED: LockedError,
    ExitCode.TRANSPORT: TransportError,
}
_PREFIX = re.compile(r"^backup-pipelines: (error|internal error): ", re.M)
_CANCEL_POLL_SECONDS = 1.0


class _Cancelled(Exception):
    """The caller's cancel event was set while the worker command ran."""


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


class Worker(ABC):
    """Where a host's commands run."""

    host: str

    @abstractmethod
    def argv(self, cli_args: list[str], *, timeout: float | None = None) -> list[str]:
        """The full command line that runs `backup-pipelines <cli_args>` on the worker."""

    def describe(self) -> str:
        return self.host

    def run(
        self,
        cli_args: list[str],
        *,
        timeout: float | None = None,
        on_stderr_line: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completed:
        """Run the CLI on the worker; past `timeout` seconds it is killed and a TransportError raised.

        The deadline is kept by waiting on the process, not on its output: a child that hangs
        without writing (or a grandchild that keeps our pipes open) is killed all the same.
        `cancel`, when set, kills it too: a caller on a thread cannot be reached by a signal.
        """
        argv = self.argv(cli_args, timeout=timeout)
        log.info("on %s: backup-pipelines %s", self.describe(), shlex.join(cli_args))
        try:
            proc = subprocess.Popen(
                killable(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # so the whole group can be killed at the deadline
            )
        except OSError as err:
            raise TransportError(
                f"cannot start {argv[0]}: {err.strerror}", host=self.host, command=shlex.join(argv)
            ) from None
        assert proc.stderr is not None and proc.stdout is not None
        err_lines: list[str] = []
        out_chunks: list[str] = []

        def read_stderr() -> None:
            # line by line, so progress and warnings reach the caller's log live
            for line in proc.stderr:  # type: ignore[union-attr]
                err_lines.append(line)
                if on_stderr_line:
                    on_stderr_line(line.rstrip("\n"))

        readers = [
            threading.Thread(target=read_stderr, daemon=True),
            threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        ]
        for r in readers:
            r.start()
        started = time.monotonic()
        try:
            rc = self._wait(proc, started, timeout, cancel)
        except _Cancelled:
            kill_group(proc, grace=10.0)
            for r in readers:
                r.join(5)
            raise TransportError(
                f"backup-pipelines {' '.join(cli_args[:2])} on {self.describe()} was stopped: its run is "
                "being cancelled",
                host=self.host,
                command=shlex.join(cli_args),
                stderr_tail=tail("".join(err_lines)) or None,
                hint="nothing it was writing is committed; the next scheduled run takes it again",
            ) from None
        except subprocess.TimeoutExpired:
            kill_group(proc, grace=10.0)
            for r in readers:
                r.join(5)
            raise TransportError(
                f"backup-pipelines {' '.join(cli_args[:2])} on {self.describe()} did not finish within "
                f"{timeout:g}s and was killed",
                host=self.host,
                command=shlex.join(cli_args),
                stderr_tail=tail("".join(err_lines)) or None,
                hint="look on the worker for a hung backup tool or a stuck mount; raise "
                "orchestration.timeout_minutes if the work is legitimately that long",
            ) from None
        except BaseException:
            kill_group(proc, grace=5.0)
            raise
        for r in readers:
            # a daemon left holding our pipes must not hold us past the deadline either
            r.join(None if timeout is None else max(1.0, timeout - (time.monotonic() - started)))
        return Completed(argv, rc, "".join(out_chunks), "".join(err_lines))

    @staticmethod
    def _wait(
        proc: subprocess.Popen[str], started: float, timeout: float | None, cancel: threading.Event | None
    ) -> int:
        if cancel is None:
            return proc.wait(timeout=timeout)
        while True:
            step = _CANCEL_POLL_SECONDS
            if timeout is not None:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                step = min(step, left)
            try:
                return proc.wait(timeout=step)
            except subprocess.TimeoutExpired:
                if cancel.is_set():
                    raise _Cancelled() from None

    def run_json(
        self,
        cli_args: list[str],
        *,
        timeout: float | None = None,
        on_stderr_line: Callable[[str], None] | None = None,
        ok_codes: tuple[int, ...] = (0,),
        cancel: threading.Event | None = None,
    ) -> Any:
        """Run a `--json` command; return its parsed output or raise the remote error, typed."""
        res = self.run(cli_args, timeout=timeout, on_stderr_line=on_stderr_line, cancel=cancel)
        if res.returncode not in ok_codes:
            raise self._error(res, cli_args)
        try:
            return json.loads(res.stdout)
        except ValueError:
            raise TransportError(
                f"backup-pipelines on {self.describe()} printed no JSON result",
                host=self.host,
                command=shlex.join(cli_args),
                stderr_tail=tail(res.stderr),
                hint="check that the same backup-pipelines version is installed on the worker",
            ) from None

    def _error(self, res: Completed, cli_args: list[str]) -> BackupPipelinesError:
        text = res.stderr.strip()
        m = list(_PREFIX.finditer(text))
        message = text[m[-1].end() :].strip() if m else ""
        cls = _BY_CODE.get(res.returncode)
        if cls is None or not message:
            return self._transport_error(res, cli_args)
        first, _, rest = message.partition("\n")
        err = cls(f"on worker {self.describe()}: {first}", host=self.host, command=shlex.join(cli_args))
        err.stderr_tail = rest.strip() or None
        return err

    def _transport_error(self, res: Completed, cli_args: list[str]) -> BackupPipelinesError:
        return TransportError(
            f"backup-pipelines on {self.describe()} exited with status {res.returncode}",
            host=self.host,
            command=shlex.join(cli_args),
            stderr_tail=tail(res.stderr),
        )


class LocalWorker(Worker):
    """The worker is this machine: run the CLI as a child process with the given config."""

    def __init__(self, host: str, config_path: Path | str, spec: LocalTransport | None = None) -> None:
        self.host = host
        self.config_path = str(config_path)
        self.command = (
            shlex.split(spec.command) if spec and spec.command else [sys.executable, "-m", "backup_pipelines.cli"]
        )

    def argv(self, cli_args: list[str], *, timeout: float | None = None) -> list[str]:
        return [*self.command, "-c", self.config_path, *cli_args]

    def describe(self) -> str:
        return f"{self.host} (local)"


class SSHWorker(Worker):
    """The worker is the database host: run its installed CLI over SSH, non-interactively."""

    def __init__(self, host: str, spec: SSHTransport, ssh_binary: str = "ssh") -> None:
        self.host = host
        self.spec = spec
        self.ssh_binary = ssh_binary

    def ssh_args(self) -> list[str]:
        s = self.spec
        args = [
            self.ssh_binary,
            "-p",
            str(s.port),
            "-o",
            "BatchMode=yes",  # never prompt for a password or passphrase
            "-o",
            f"ConnectTimeout={s.connect_timeout}",
            "-o",
            "ServerAliveInterval=30",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "LogLevel=ERROR",
        ]
        if s.key_file:
            args += ["-i", str(s.key_file), "-o", "IdentitiesOnly=yes"]
        if s.known_hosts_file:
            args += ["-o", f"UserKnownHostsFile={s.known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
        return [*args, f"{s.user}@{s.host}"]

    def argv(self, cli_args: list[str], *, timeout: float | None = None) -> list[str]:
        remote = [*shlex.split(self.spec.remote_command), "-c", self.spec.remote_config, *cli_args]
        if timeout is not None:
            # Killing our ssh client does not stop the remote command (no tty, no SIGHUP): the
            # worker keeps the same deadline itself. TERM lets the CLI stop its tools; KILL 30s on.
            remote = ["timeout", "--kill-after=30", f"{math.ceil(timeout)}", *remote]
        return [*self.ssh_args(), "--", shlex.join(remote)]

    def describe(self) -> str:
        return f"{self.host} (ssh {self.spec.user}@{self.spec.host}:{self.spec.port})"

    def _transport_error(self, res: Completed, cli_args: list[str]) -> BackupPipelinesError:
        if res.returncode == 255:
            return TransportError(
                f"cannot reach worker {self.describe()} over SSH",
                host=self.host,
                command=shlex.join(cli_args),
                stderr_tail=tail(res.stderr),
                hint="check the host is up, the key_file is authorised there and known_hosts_file holds its host key",
            )
        if res.returncode == 127:
            return TransportError(
                f"{self.spec.remote_command!r} is not installed on {self.describe()}",
                host=self.host,
                stderr_tail=tail(res.stderr),
                hint="install backup-pipelines on the database host or set transport.remote_command",
            )
        return super()._transport_error(res, cli_args)


def worker_for(host: str, spec: LocalTransport | SSHTransport | None, config_path: Path | str) -> Worker:
    if isinstance(spec, SSHTransport):
        return SSHWorker(host, spec)
    return LocalWorker(host, config_path, spec)
