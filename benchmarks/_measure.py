"""Shared helpers for the benchmark scripts: run a child and measure it, medians, tables.

`run()` starts a command with its stdin from a file (or a pipe, or nothing) and its stdout to
a file (or /dev/null, or a pipe), waits for it with os.wait4 and returns its wall time, the
user+sys CPU seconds and the peak RSS of the command (rusage covers the command and any
descendants it waited for, so a wrapper's children count too; peak RSS is the largest of
them, not a sum). Nothing here prints unless
asked; nothing here is a test.

`add_output_args()`, `work_dir()`, `redrawn()` and `finish()` are the flags and the ending the
benchmarks with a chart share: where the work, the raw numbers and the chart go, and writing
the numbers before drawing, so that a missing matplotlib costs only the chart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

MiB = 1024 * 1024
GiB = 1024 * MiB

RESULTS = Path(__file__).parent / "results"

StdinSpec = str | Path | int | IO[bytes] | None
StdoutSpec = str | Path | int | IO[bytes] | None


@dataclass(frozen=True)
class Measurement:
    """One child run: wall seconds, user+sys CPU seconds, peak RSS bytes, exit status."""

    wall: float
    cpu: float
    user: float
    sys: float
    maxrss: int
    returncode: int
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CommandFailed(RuntimeError):
    def __init__(self, cmd: Sequence[str], m: Measurement) -> None:
        super().__init__(f"{' '.join(map(str, cmd))} exited with {m.returncode}: {m.stderr_tail}")
        self.measurement = m


def _open_in(spec: StdinSpec, stack: contextlib.ExitStack) -> Any:
    if spec is None:
        return subprocess.DEVNULL
    if isinstance(spec, str | Path):
        return stack.enter_context(open(spec, "rb", buffering=0))
    return spec


def _open_out(spec: StdoutSpec, stack: contextlib.ExitStack) -> Any:
    if spec is None:
        return subprocess.DEVNULL
    if isinstance(spec, str | Path):
        return stack.enter_context(open(spec, "wb", buffering=0))
    return spec


# The launcher between us and the measured command. Linux folds the high-water RSS of the
# memory image a process replaces at exec into that process's ru_maxrss, so a child forked
# from this (large) Python process and exec'd would report at least our own peak RSS. The
# launcher is a fresh, small interpreter (`-S -I`: ~10 MiB); the command it spawns starts from
# that, and the launcher reports the command's own wait4 rusage and wall time on a pipe.
_LAUNCHER = r"""
import os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
argv = sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        pass
wall = time.perf_counter() - t0
os.write(fd, ("%r %r %r %d %d" % (wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, status)).encode())
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


def run(
    cmd: Sequence[str | Path],
    *,
    stdin: StdinSpec = None,
    stdout: StdoutSpec = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Measurement:
    """Run `cmd` to completion and measure it (see the module docstring).

    stdin: a path to read, an open file or fd (e.g. a producer's pipe), or None for /dev/null.
    stdout: a path to write, an open file or fd, or None for /dev/null.
    The child's stderr is kept in a temporary file; its tail is in the result.
    A child still running after `timeout` seconds is killed (with its process group).
    The figures are the command's own (and its waited-for descendants'): wall time from its
    spawn to its exit, user and sys CPU, peak RSS; see _LAUNCHER for why there is a launcher.
    """
    argv = [str(c) for c in cmd]
    rfd, wfd = os.pipe()
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile())
        fin = _open_in(stdin, stack)
        fout = _open_out(stdout, stack)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-I", "-c", _LAUNCHER, str(wfd), *argv],
                stdin=fin,
                stdout=fout,
                stderr=err,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                pass_fds=(wfd,),
            )
        finally:
            os.close(wfd)
        timer = None
        if timeout:
            timer = threading.Timer(timeout, _kill_group, (proc.pid,))
            timer.daemon = True
            timer.start()
        try:
            with os.fdopen(rfd, "rb") as r:
                report = r.read().decode()
            proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
        err.seek(0)
        text = err.read().decode(errors="replace")
    if report:
        wall_s, utime_s, stime_s, rss_s, status_s = report.split()
        wall, utime, stime = float(wall_s), float(utime_s), float(stime_s)
        maxrss, code = int(rss_s) * 1024, os.waitstatus_to_exitcode(int(status_s))  # Linux reports KiB
    else:  # the launcher died (killed on timeout, or the command could not be started)
        wall = utime = stime = float("nan")
        maxrss, code = 0, proc.returncode or -1
    m = Measurement(
        wall=wall,
        cpu=utime + stime,
        user=utime,
        sys=stime,
        maxrss=maxrss,
        returncode=code,
        stderr_tail=_tail(text),
    )
    if check and not m.ok:
        raise CommandFailed(argv, m)
    return m


def run_piped(
    producer: Sequence[str | Path],
    cmd: Sequence[str | Path],
    *,
    stdout: StdoutSpec = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Measurement:
    """`producer | cmd`, measuring only `cmd` (the producer's cost is not counted)."""
    prod = subprocess.Popen([str(c) for c in producer], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert prod.stdout is not None
    try:
        m = run(cmd, stdin=prod.stdout, stdout=stdout, env=env, timeout=timeout, check=False)
    finally:
        prod.stdout.close()
        if prod.poll() is None:
            prod.kill()
        prod.wait()
    if check and not m.ok:
        raise CommandFailed([str(c) for c in cmd], m)
    return m


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def process_cpu(pid: int) -> float:
    """User+sys CPU seconds a running process (all its threads) has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def process_rss(pid: int) -> int:
    """Current resident set size of a running process, in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def system_busy() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_peak_rss(pid: int) -> int:
    """Peak resident set size of a running process so far (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def ratio(ours: float, best: float) -> float:
    return ours / best if best else float("nan")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str | None = None) -> str:
    """A plain-text table; `align` is one char per column, 'l' or 'r' (numbers right by default)."""
    body = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if align is None:
        align = "l" + "r" * (len(headers) - 1)

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.ljust(widths[i]) if align[i] == "l" else cell.rjust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None, align: str | None = None
) -> None:
    if title:
        print(f"\n{title}")
    print(format_table(headers, rows, align=align), flush=True)


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes per second)."""
    return nbytes / seconds / 1e6 if seconds > 0 else float("nan")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


Draw = Callable[[dict[str, Any], Path], None]


def add_output_args(ap: argparse.ArgumentParser, stem: str) -> None:
    """--work-dir, --out, --chart and --redraw; the numbers and the chart go to results/<stem>.json and .png."""
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS / f"{stem}.json"))
    ap.add_argument("--chart", default=str(RESULTS / f"{stem}.png"))
    ap.add_argument("--redraw", action="store_true", help="only redraw --chart from the numbers in --out")


def work_dir(args: argparse.Namespace, prefix: str) -> Path:
    """--work-dir, or a fresh directory in /var/tmp (on disk, not a tmpfs: the data is large)."""
    work = Path(args.work_dir or tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    return work


def redrawn(args: argparse.Namespace, draw: Draw) -> bool:
    """With --redraw, draw --chart from the numbers in --out and say so: the caller then measures nothing."""
    if not args.redraw:
        return False
    draw(json.loads(Path(args.out).read_text()), Path(args.chart))
    print(f"chart: {args.chart}")
    return True


def finish(args: argparse.Namespace, results: dict[str, Any], draw: Draw) -> None:
    """Write the numbers to --out, then draw --chart: the numbers first, so that a run lacks at most its chart."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.out}")
    try:
        draw(results, Path(args.chart))
        print(f"chart: {args.chart}")
    except ImportError:
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')")
