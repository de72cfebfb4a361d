"""Throttle settings take effect: the stream rate bounds the wall time, and the whole pipeline (the tool,
the pump, the compressor threads) runs at the niceness and IO class asked, while the caller keeps its own."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.config import ThrottleSettings, parse_config
from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.pipeline import stream_command
from backup_pipelines.core.session import Session
from tests.fixtures.mariadb import load_shop, write_secret

pytestmark = pytest.mark.integration
MiB = 2**20


def _session(tmp_path: Path) -> Session:
    key = write_secret(tmp_path / "repo.key", generate_key_text())
    cfg = parse_config(
        {
            "repository": {"url": f"file://{tmp_path / 'repo'}", "encryption_key_file": str(key)},
            "hosts": {"h": {"datadir": str(tmp_path), "socket": str(tmp_path / "none.sock")}},
            "work_dir": str(tmp_path / "work"),
        }
    )
    return Session.open(cfg)


def _thread_priority(tid: int) -> tuple[int, str]:
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    io = subprocess.run(["ionice", "-p", str(tid)], capture_output=True, text=True, check=True).stdout.strip()
    return nice, io


def test_stream_rate_bounds_wall_time(tmp_path):
    size, rate = 6 * MiB, 3 * MiB
    with _session(tmp_path) as session:
        t0 = time.monotonic()
        s = stream_command(
            session,
            ["head", "-c", str(size), "/dev/urandom"],
            "h/rated.bin",
            what="rated stream",
            host="h",
            backup_id="b1",
            throttle=ThrottleSettings(stream_bytes_per_second=rate),
        )
        rated = time.monotonic() - t0
        t0 = time.monotonic()
        stream_command(
            session, ["head", "-c", str(size), "/dev/urandom"], "h/free.bin", what="free", host="h", backup_id="b2"
        )
        free = time.monotonic() - t0
    assert s.source_size == size
    # The last MiB read may land just after the clock says size/rate - 1 MiB/rate.
    assert rated >= (size - MiB) / rate, rated
    assert free < rated / 2, (free, rated)


def test_whole_pipeline_runs_at_the_priority_asked_and_the_caller_keeps_its_own(tmp_path):
    before = _thread_priority(threading.get_native_id())
    seen: list[tuple[int, str]] = []
    script = (
        f"cut -d' ' -f19 /proc/$$/stat > {tmp_path / 'tool.nice'}; ionice > {tmp_path / 'tool.io'}; "
        # The parent sets the session's autogroup just after the spawn: wait up to 5 s for it.
        "for i in $(seq 50); do grep -q 'nice 12' /proc/$$/autogroup && break; sleep 0.1; done; "
        f"cat /proc/$$/autogroup > {tmp_path / 'tool.autogroup'}; "
        "head -c 8388608 /dev/urandom"
    )
    with _session(tmp_path) as session:
        s = stream_command(
            session,
            ["sh", "-c", script],
            "h/niced.bin",
            what="niced stream",
            host="h",
            backup_id="b1",
            progress=lambda n: seen.append(_thread_priority(threading.get_native_id())) if not seen else None,
            throttle=ThrottleSettings(nice=12, ionice_class="best-effort", ionice_level=6, compression_threads=2),
        )
    assert s.source_size == 8 * MiB
    assert (tmp_path / "tool.nice").read_text().strip() == "12"
    assert (tmp_path / "tool.io").read_text().strip() == "best-effort: prio 6"
    if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
        # The tool leads its own session: its autogroup is what competes with mariadbd's for CPU.
        assert (tmp_path / "tool.autogroup").read_text().split()[-1] == "12"
    assert seen == [(12, "best-effort: prio 6")]  # our compress/encrypt/write thread
    assert _thread_priority(threading.get_native_id()) == before


def test_a_throttled_mariabackup_backup_runs_niced_idle_and_with_throttle(source, make_config):
    load_shop(source, orders=2000)
    cfg = make_config(
        host_overrides={
            "throttle": {
                "engine_iops": 200,
                "stream_bytes_per_second": "8M",
                "compression_threads": 1,
                "nice": 9,
                "ionice_class": "idle",
            }
        }
    )
    tools: dict[int, tuple[int, str, str, str]] = {}
    autogroups = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"

    def watch(_n: int) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in tools:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat[1]) == os.getpid() and cmdline[0].endswith(b"mariabackup"):
                io = subprocess.run(["ionice", "-p", pid], capture_output=True, text=True).stdout.strip()
                group = Path(f"/proc/{pid}/autogroup").read_text().split()[-1] if autogroups else "n/a"
                tools[int(pid)] = (int(stat[16]), io, group, " ".join(a.decode() for a in cmdline))

    with Session.open(cfg) as session:
        m = run_physical_backup(session, "db1", "full", progress=watch)
    assert m.size_bytes > 0 and m.source_size_bytes > 0
    assert tools, "mariabackup was never seen running"
    [(nice, io, group, cmdline)] = tools.values()
    assert nice == 9 and io == "idle"
    assert group == ("9" if autogroups else "n/a")
    assert "--throttle=200" in cmdline


def test_ctrl_c_during_a_niced_stream_kills_the_tool_and_commits_nothing(tmp_path):
    import _thread

    pid_file = tmp_path / "tool.pid"
    timer = threading.Timer(1.5, _thread.interrupt_main)
    with _session(tmp_path) as session:
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            stream_command(
                session,
                ["sh", "-c", f"echo $$ > {pid_file}; head -c 1000 /dev/zero; exec sleep 60"],
                "h/interrupted.bin",
                what="interrupted stream",
                host="h",
                backup_id="b1",
                throttle=ThrottleSettings(nice=5),
            )
        assert time.monotonic() - t0 < 20
        assert not session.repo.exists("h/interrupted.bin")
    tool = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(tool, 0)
