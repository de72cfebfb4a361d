"""Loaded by every Python process the fleet benchmark's daemon starts (PYTHONPATH): at exit,
append the process's own CPU (all its threads) and command line to $BP_CPU_PROBE_LOG."""

import atexit
import json
import os
import resource
import sys
import time

_LOG = os.environ.get("BP_CPU_PROBE_LOG")
_T0 = time.time()


def _report() -> None:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    entry = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": [os.path.basename(sys.executable), *sys.argv][:8],
        "start": _T0,
        "end": time.time(),
        "cpu": me.ru_utime + me.ru_stime,
        "children_cpu": kids.ru_utime + kids.ru_stime,
    }
    try:
        with open(_LOG, "a") as f:  # type: ignore[arg-type]
            f.write(json.dumps(entry) + "\n")
    except OSError:
        pass


if _LOG:
    atexit.register(_report)
