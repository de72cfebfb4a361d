"""Running external tools so that failures are loud and explain themselves.

stderr always goes to a file (a pipe could fill and deadlock a streaming tool) and
its tail ends up in the error. A tool "succeeded" only if it exited 0 *and*, where
the tool has one, printed its success marker: a backup tool killed at the wrong
moment can exit 0-looking through a wrapper, but cannot fake `completed OK!`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import ToolError, tail

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024


def enlarge_pipe(fileobj: IO[bytes] | int) -> None:
    """Bigger pipe buffers mean fewer, larger reads between producer and consumer."""
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def describe(cmd: list[str]) -> str:
    return shlex.join(cmd)


def killable(cmd: list[str]) -> list[str]:
    """`cmd`, run so that SIGTERM reaches it even where this process ignores SIGTERM.

    An ignored signal stays ignored across exec, and Dagster's run worker maps SIGTERM to
    whatever SIGINT does (for Kubernetes): started in the background from a shell, where SIGINT
    is ignored, it ignores SIGTERM too, and every tool it starts would then outlive kill_group's
    SIGTERM until the SIGKILL after the grace. coreutils' `env --default-signal` resets it.
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        return ["env", "--default-signal=TERM", *cmd]
    return cmd


def kill_group(proc: subprocess.Popen[Any], *, grace: float = 10.0) -> None:
    """SIGTERM the child's process group (it was started in its own session), SIGKILL after `grace`.

    The group, not the pid: a hung `sh -c` or `ssh` has children that would otherwise keep
    running, and keep our pipes open, after their parent is gone.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            # the leader is gone; make sure nothing else of its group lingers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def timed_out_hint(timeout: float) -> str:
    return (
        f"it was killed after its {timeout:g}s deadline; check the host for a hung tool, a full disk or a "
        "stuck mount, then re-run (nothing was committed to the catalog)"
    )


class Tool:
    """A started child process whose stderr is kept in a temp file.

    With `timeout`, a watchdog kills the tool's process group when the deadline passes,
    whether or not anyone is reading its output; `check` then raises a ToolError saying so.
    """

    def __init__(
        self,
        cmd: list[str],
        *,
        what: str,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        host: str | None = None,
        backup_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.cmd = cmd
        self.what = what
        self.host = host
        self.backup_id = backup_id
        self.timeout = timeout
        self.timed_out = False
        self._watchdog: threading.Timer | None = None
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        log.debug("running %s", describe(cmd))
        try:
            self.proc = subprocess.Popen(
                killable(cmd),
                stdin=stdin,
                stdout=stdout,
                stderr=self._err,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # a Ctrl-C to us must not half-kill the tool first
            )
        except OSError as err:
            self._err.close()
            raise ToolError(
                f"{what}: cannot start {cmd[0]}: {err.strerror}",
                host=host,
                backup_id=backup_id,
                command=describe(cmd),
                hint=f"check that {cmd[0]} is installed and executable",
            ) from None
        if timeout is not None:
            self._watchdog = threading.Timer(timeout, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _expire(self) -> None:
        if self.proc.poll() is None:
            self.timed_out = True
            log.warning("%s: %s passed its %gs deadline; killing it", self.what, self.cmd[0], self.timeout)
            kill_group(self.proc, grace=5.0)

    def stderr_text(self) -> str:
        self._err.flush()
        self._err.seek(0)
        return self._err.read().decode("utf-8", errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self) -> int:
        return self.proc.wait()

    def check(self, *, marker: str | None = None, rc: int | None = None) -> str:
        """Raise ToolError unless the tool exited 0 (and printed `marker`); return its stderr."""
        rc = self.proc.wait() if rc is None else rc
        text = self.stderr_text()
        if self.timed_out:
            raise ToolError(
                f"{self.what}: {Path(self.cmd[0]).name} did not finish within {self.timeout:g}s",
                host=self.host,
                backup_id=self.backup_id,
                command=describe(self.cmd),
                stderr_tail=tail(text) or None,
                hint=timed_out_hint(self.timeout or 0),
            )
        if rc != 0:
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            raise ToolError(
                f"{self.what}: {Path(self.cmd[0]).name} {how}",
                host=self.host,
                backup_id=self.backup_id,
                command=describe(self.cmd),
                stderr_tail=tail(text),
                hint="read the stderr tail above; nothing was committed to the catalog",
            )
        if marker is not None and marker not in text[-4096:]:
            raise ToolError(
                f"{self.what}: {Path(self.cmd[0]).name} exited 0 but never printed {marker!r}",
                host=self.host,
                backup_id=self.backup_id,
                command=describe(self.cmd),
                stderr_tail=tail(text),
                hint="the tool did not finish its work; nothing was committed to the catalog",
            )
        return text

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.kill()
        self._err.close()

    def __enter__(self) -> Tool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(
    cmd: list[str],
    *,
    what: str,
    marker: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    host: str | None = None,
    backup_id: str | None = None,
    timeout: float | None = None,
) -> str:
    """Run to completion (killed after `timeout` seconds); return stderr text or raise ToolError."""
    with Tool(
        cmd,
        what=what,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        host=host,
        backup_id=backup_id,
        timeout=timeout,
    ) as t:
        return t.check(marker=marker)


@dataclass(frozen=True)
class Captured:
    returncode: int
    stdout: str
    stderr: str


def capture(
    cmd: list[str],
    *,
    what: str,
    timeout: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    host: str | None = None,
) -> Captured:
    """Run a short command to completion under a deadline; its exit status is the caller's to judge.

    Output goes to temp files, not pipes: a daemon a start command leaves behind inherits them
    without making us wait for its end. `input` is written to stdin (a pipe, so a secret given
    this way reaches the child by file descriptor). Past the deadline the process group is
    killed and a ToolError names the command and the host.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                killable(cmd),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError as e:
            raise ToolError(
                f"{what}: cannot start {cmd[0]}: {e.strerror}",
                host=host,
                command=describe(cmd),
                hint=f"check that {cmd[0]} is installed and executable",
            ) from None
        try:
            proc.communicate(input.encode() if input is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc, grace=5.0)
            err.seek(0)
            raise ToolError(
                f"{what}: {Path(cmd[0]).name} did not finish within {timeout:g}s",
                host=host,
                command=describe(cmd),
                stderr_tail=tail(err.read()) or None,
                hint=timed_out_hint(timeout),
            ) from None
        except BaseException:
            kill_group(proc, grace=1.0)
            raise
        out.seek(0)
        err.seek(0)
        return Captured(
            proc.returncode,
            out.read().decode("utf-8", errors="replace"),
            err.read().decode("utf-8", errors="replace"),
        )


class PipeFeeder:
    """Writes to a child's stdin from a thread, so producing the bytes overlaps the child consuming them.

    `write` hands over a chunk the caller will not touch again (decompressor output is a fresh
    object each time) and returns at once while fewer than `max_bytes` wait: the bound is on
    bytes, not chunks, so memory stays put whatever size the producer's chunks are. `finish`
    drains, closes the pipe and re-raises what the writer thread hit (a BrokenPipeError when
    the child died).
    """

    def __init__(self, pipe: IO[bytes], max_bytes: int = 16 * 1024 * 1024) -> None:
        import collections
        import threading

        enlarge_pipe(pipe)
        self._pipe = pipe
        self._raw = getattr(pipe, "raw", pipe)
        self.max_bytes = max(1, int(max_bytes))
        self.queued = 0  # bytes waiting for the writer thread
        self.peak_queued = 0
        self._chunks: collections.deque[bytes | memoryview | None] = collections.deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pipe-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks:
                    self._cond.wait()
                chunk = self._chunks[0]
            if chunk is None:
                return
            if self._error is None:  # after an error: drain so the producer never blocks on a dead child
                try:
                    view = memoryview(chunk)
                    while len(view):
                        n = self._raw.write(view)
                        view = view[n:]
                except BaseException as err:
                    self._error = err
            with self._cond:
                self._chunks.popleft()
                self.queued -= len(chunk)
                self._cond.notify_all()

    def _put(self, chunk: bytes | None) -> None:
        size = len(chunk) if chunk is not None else 0
        with self._cond:
            # One chunk larger than the whole budget still goes through, alone.
            while self._chunks and self.queued + size > self.max_bytes and self._error is None:
                self._cond.wait()
            self._chunks.append(chunk)
            self.queued += size
            self.peak_queued = max(self.peak_queued, self.queued)
            self._cond.notify_all()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._error is not None:
            raise self._error
        if isinstance(data, memoryview | bytearray):
            data = bytes(data)  # the caller may reuse its buffer
        self._put(data)
        return len(data)

    def finish(self) -> None:
        self._put(None)
        self._thread.join()
        try:
            self._pipe.close()
        except OSError as err:
            self._error = self._error or err
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop feeding without waiting for the child (it is being killed)."""
        self._error = self._error or BrokenPipeError("abandoned")
        with self._cond:
            self._chunks.append(None)
            self._cond.notify_all()
