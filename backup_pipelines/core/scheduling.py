"""Running a backup pipeline at a lower CPU and IO priority, as `nice` and `ionice` would run a shell pipe.

Linux keeps the nice value and the IO priority per thread, and a thread or process inherits
them from the thread that creates it. So the pipeline runs in a thread of its own that first
lowers its own priority: the backup tool it starts, the pump's reader thread, zstd's workers
and the uploader's threads all inherit it, and the caller's thread keeps its priority (an
unprivileged process cannot raise a priority back). The IO classes only take effect under
the bfq (or old cfq) IO scheduler; under mq-deadline or none the kernel records them but
does not schedule by them.

With the scheduler's autogroups on (Debian's default: /proc/sys/kernel/sched_autogroup_enabled),
CPU time is shared fairly between sessions first and a thread's nice value only counts within
its own session. mariadbd runs in a session of its own, and so does the backup tool (Tool
starts it with a new session), so the tool's session is given the niceness too
(/proc/PID/autogroup), and so is ours when we lead our session (the CLI started by a transport,
cron or systemd); a CLI run from an interactive shell shares the shell's session and is left alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .config import ThrottleSettings
from .process import run

T = TypeVar("T")
IOPRIO_CLASSES = {"best-effort": 2, "idle": 3}


def lower_this_thread(throttle: ThrottleSettings) -> None:
    """Give the calling thread the niceness and IO class asked for (niceness is absolute, never raised)."""
    tid = threading.get_native_id()
    if throttle.nice is not None and throttle.nice > os.getpriority(os.PRIO_PROCESS, tid):
        os.setpriority(os.PRIO_PROCESS, tid, throttle.nice)
    if throttle.ionice_class is not None:
        cmd = ["ionice", "-c", str(IOPRIO_CLASSES[throttle.ionice_class])]
        if throttle.ionice_level is not None:
            cmd += ["-n", str(throttle.ionice_level)]
        run([*cmd, "-p", str(tid)], what="setting the pipeline's IO priority")


def lower_session(pid: int, throttle: ThrottleSettings) -> None:
    """Give the autogroup of `pid`'s session the niceness asked, if autogroups exist and `pid` leads it."""
    if throttle.nice is None:
        return
    path = Path(f"/proc/{pid}/autogroup")
    with contextlib.suppress(OSError, ValueError, IndexError):  # no autogroups here, or the process is gone
        if os.getsid(pid) != pid:
            return
        current = int(path.read_text().rsplit("nice", 1)[1])
        if throttle.nice > current:
            path.write_text(str(throttle.nice))


def run_lowered(throttle: ThrottleSettings, fn: Callable[[], T], cancel: Callable[[], object]) -> T:
    """Run `fn` in a thread at the lowered priority and return its result (or raise what it raised).

    If the waiting caller is interrupted (Ctrl-C), `cancel` stops the work (it kills the tool)
    and the thread is waited for, so nothing keeps running behind the caller's back.
    """
    box: dict[str, object] = {}

    def body() -> None:
        try:
            lower_this_thread(throttle)
            lower_session(os.getpid(), throttle)
            box["result"] = fn()
        except BaseException as err:  # handed to the caller, which raises it
            box["error"] = err

    thread = threading.Thread(target=body, name="backup-pipeline")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except BaseException:
        cancel()
        thread.join()
        raise
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
