"""Deadlines hold for hung commands that print nothing: locally, over real SSH, and for every tool runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from backup_pipelines.core.config import LocalTransport, SSHTransport
from backup_pipelines.core.errors import ToolError, TransportError
from backup_pipelines.core.process import capture, run
from backup_pipelines.core.transport import LocalWorker, SSHWorker

pytestmark = pytest.mark.integration


def _marker() -> str:
    """A sleep length no other process on the machine uses, so `pgrep -f` finds only ours."""
    return f"{40 + uuid.uuid4().int % 10_000 / 1000:.3f}"


def _alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def _gone_within(pattern: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pattern):
            return True
        time.sleep(0.1)
    return False


def test_local_worker_killed_at_deadline_with_its_children(tmp_path):
    secs = _marker()
    # A CLI stand-in that writes one line, then hangs silently, with a grandchild holding our pipes.
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "print('working', file=sys.stderr, flush=True)\n"
        f"subprocess.Popen(['sleep', '{secs}'])\n"
        "time.sleep(60)\n"
    )
    hung = f"{sys.executable} {script}"
    worker = LocalWorker("db1", tmp_path / "config.yaml", LocalTransport(command=hung))
    lines: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(TransportError) as err:
        worker.run_json(["backup", "full", "--host", "db1", "--json"], timeout=1.5, on_stderr_line=lines.append)
    elapsed = time.monotonic() - t0
    assert 1.4 < elapsed < 6, elapsed
    text = str(err.value)
    assert "did not finish within 1.5s" in text and "db1 (local)" in text and "what to do" in text
    assert lines == ["working"]
    assert _gone_within(f"sleep {secs}", 3), "the hung command's child survived the deadline"


def test_ssh_worker_killed_at_deadline_on_both_ends(sshd, tmp_path):
    secs = _marker()
    spec = SSHTransport(
        host="127.0.0.1",
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.client_key,
        known_hosts_file=sshd.known_hosts,
        remote_command=f"sh -c 'sleep {secs}'",
        remote_config=str(tmp_path / "config.yaml"),
    )
    worker = SSHWorker("db1", spec)
    t0 = time.monotonic()
    with pytest.raises(TransportError, match=r"did not finish within 2s") as err:
        worker.run_json(["list", "--host", "db1", "--json"], timeout=2)
    elapsed = time.monotonic() - t0
    assert 1.9 < elapsed < 8, elapsed
    assert "ssh" in str(err.value) and err.value.host == "db1"
    # the remote command does not outlive the deadline either (no tty: ssh's death alone would not stop it)
    assert _gone_within(f"sleep {secs}", 5), "the remote command kept running after the deadline"


def test_tool_runners_enforce_their_deadline(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ToolError, match=r"preparing: sleep did not finish within 1s") as err:
        run(["sleep", "30"], what="preparing", host="db1", timeout=1)
    assert time.monotonic() - t0 < 5
    assert err.value.host == "db1" and err.value.command == "sleep 30" and "deadline" in (err.value.hint or "")

    t0 = time.monotonic()
    # a shell that ignores SIGTERM still goes (SIGKILL after the grace)
    with pytest.raises(ToolError, match=r"stopping staging: sh did not finish within 1s"):
        capture(["sh", "-c", "trap '' TERM; echo going >&2; sleep 30"], what="stopping staging", timeout=1)
    assert time.monotonic() - t0 < 9

    # a start command that leaves a daemon holding its stdout/stderr returns when the command does
    secs = _marker()
    t0 = time.monotonic()
    res = capture(["sh", "-c", f"sleep {secs} & echo $!"], what="starting", timeout=10)
    assert res.returncode == 0 and time.monotonic() - t0 < 3
    os.kill(int(res.stdout.strip()), signal.SIGKILL)  # the daemon stand-in, by its pid


def test_sigterm_stops_the_cli_and_the_tools_it_runs(s3_server, tmp_path):
    """What a worker deadline (or systemd, or Dagster) sends: the tool in its own session must die too."""
    s3_server.client().create_bucket(Bucket="sigterm")
    secs = _marker()
    cli = subprocess.Popen(
        [
            *(sys.executable, "-m", "backup_pipelines.cli", "stream", "put", "s3://sigterm/k"),
            *("--endpoint-url", s3_server.endpoint_url, "--", "sleep", secs),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "BACKUP_PIPELINES_CONFIG": ""},
    )
    try:
        deadline = time.monotonic() + 30
        while not _alive(f"^sleep {secs}$"):  # the producer itself, not the CLI naming it
            assert time.monotonic() < deadline and cli.poll() is None, "the producer never started"
            time.sleep(0.1)
        cli.send_signal(signal.SIGTERM)
        _, err = cli.communicate(timeout=20)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 143, err
    assert b"terminated (SIGTERM)" in err and b"Traceback" not in err
    assert _gone_within(f"^sleep {secs}$", 3), "the producer outlived the CLI"


def test_tools_are_killable_where_this_process_ignores_sigterm(tmp_path):
    """Dagster maps SIGTERM to SIGINT's disposition: run from a background shell, both are ignored,
    and an ignored signal survives exec. Our tools must still die on kill_group's SIGTERM."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        t0 = time.monotonic()
        with pytest.raises(ToolError, match=r"did not finish within 1s"):
            run(["sleep", "30"], what="preparing", host="db1", timeout=1)
        assert time.monotonic() - t0 < 5, "SIGTERM was ignored: the tool waited for the SIGKILL grace"
        hung = f"{sys.executable} -c 'import time; time.sleep(30)'"
        worker = LocalWorker("db1", tmp_path / "config.yaml", LocalTransport(command=hung))
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="did not finish within 1s"):
            worker.run_json(["list"], timeout=1)
        assert time.monotonic() - t0 < 5
    finally:
        signal.signal(signal.SIGTERM, previous)
