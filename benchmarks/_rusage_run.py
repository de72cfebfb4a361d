"""Run a command and append its rusage (the command and every child it waited for) as a JSON line.

`python -m benchmarks._rusage_run LOG -- CMD...`: the fleet benchmark puts this in front of the
worker's CLI (a local transport `command`), so the backup tool's CPU is measured exactly and
can be told apart from the orchestrator's. The exit status and stdout/stderr pass through.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time


def main() -> int:
    log, sep, *cmd = sys.argv[1:]
    assert sep == "--" and cmd, "usage: python -m benchmarks._rusage_run LOG -- CMD..."
    start = time.time()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    entry = {
        "argv": cmd[-6:],
        "start": start,
        "end": time.time(),
        "cpu": ru.ru_utime + ru.ru_stime,
        "exit": os.waitstatus_to_exitcode(status),
    }
    with open(log, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(entry) + "\n")
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
