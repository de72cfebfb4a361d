"""Runs in flight: separate lock kinds per host, and repository leases that cleanup honours.

A mysqldump wrapper holds a dump mid-way (its first database committed, the schema
object mid-upload) until the test opens a gate, so every check happens while a real
dump process is running, and a real SIGKILL shows what a dead run leaves and when it
may be cleaned.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from backup_pipelines.core.errors import ExitCode
from backup_pipelines.core.session import Session
from tests.fixtures.cli import cli
from tests.fixtures.mariadb import load_shop
from tests.integration.test_dumps import DUMP_GRANTS

pytestmark = pytest.mark.integration
LEASE_SECONDS = 6.0  # short for the test, long enough that a loaded CI machine still renews in time


class GatedDump:
    """A dump binary whose second call (the schema) writes ~40 MB of noise, then waits for a gate file.

    That much noise passes zstd's multi-threaded job size, so a part reaches S3 before the wait.
    """

    def __init__(self, root: Path) -> None:
        real = shutil.which("mariadb-dump") or shutil.which("mysqldump")
        assert real, "mariadb-dump is part of the dev setup"
        root.mkdir(parents=True, exist_ok=True)
        self.calls, self.waiting, self.gate = root / "calls", root / "waiting", root / "gate"
        self.script = root / "gated-dump"
        self.script.write_text(
            "#!/bin/sh\n"
            f"echo x >> {self.calls}\n"
            f'if [ "$(wc -l < {self.calls})" -eq 2 ]; then\n'
            "  head -c 30000000 /dev/urandom | base64 -w 76 | sed 's/^/-- /'\n"
            f"  touch {self.waiting}\n"
            f"  while [ ! -e {self.gate} ]; do sleep 0.1; done\n"
            "fi\n"
            f'exec {real} "$@"\n'
        )
        self.script.chmod(0o755)

    def reset(self) -> None:
        for p in (self.calls, self.waiting, self.gate):
            p.unlink(missing_ok=True)

    def wait_until_held(self, proc: subprocess.Popen[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.waiting.exists():
            assert proc.poll() is None, f"the dump ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "the dump never reached its gate"
            time.sleep(0.1)


def start_cli(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "backup_pipelines.cli", "-c", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a SIGKILL takes the dump tool too
    )


def held_objects(session: Session, s3: object | None, bucket: str | None) -> set[str]:
    """What the held dump has stored so far, once its schema object is mid-write."""
    deadline = time.monotonic() + 60
    while True:
        held = in_flight(session, s3, bucket)
        if any(k.startswith(("upload:", "partial:")) for k in held):
            return held
        assert time.monotonic() < deadline, f"the schema object never started uploading: {held}"
        time.sleep(0.2)


def in_flight(session: Session, s3: object | None, bucket: str | None) -> set[str]:
    """Everything of host db1 that is not yet committed or committed without a manifest."""
    keys = {i.key for i in session.repo.list("hosts/db1/backups/")}
    if s3 is not None:
        ups = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])  # type: ignore[attr-defined]
        keys |= {"upload:" + u["Key"] for u in ups}
    else:
        root = Path(session.repo.root)  # type: ignore[attr-defined]
        keys |= {"partial:" + p.name for p in (root / "hosts/db1/backups").rglob(".*partial-*")}
    return keys


@pytest.fixture(params=["file", "s3"])
def setup(request, source, make_config, tmp_path):
    gated = GatedDump(tmp_path / "gated")
    host = {"dump": {"binary": str(gated.script), "databases": ["shop"]}}
    extra = {"lease_seconds": LEASE_SECONDS}
    s3 = bucket = None
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        s3 = server.client()
        cfg = make_config(f"s3://{bucket}/repo", s3_endpoint=server.endpoint_url, host_overrides=host, extra=extra)
    else:
        cfg = make_config(host_overrides=host, extra=extra)
    load_shop(source, orders=500)
    source.sql(f"GRANT {DUMP_GRANTS} ON *.* TO 'backup'@'localhost'")
    session = Session.open(cfg)
    yield tmp_path / "config.yaml", session, gated, s3, bucket
    session.close()


def test_a_running_dump_blocks_no_physical_backup_and_cleanup_keeps_all_of_it(setup):
    config, session, gated, s3, bucket = setup
    dump = start_cli(config, "backup", "dump", "--host", "db1")
    try:
        gated.wait_until_held(dump)
        held = held_objects(session, s3, bucket)  # the schema object is mid-write
        assert any(k.endswith("/db/shop.sql.zst") for k in held), held  # committed, no manifest yet

        full = cli(config, "backup", "full", "--host", "db1")  # not blocked, not delayed by the dump
        assert full.returncode == 0, full.stderr
        second = cli(config, "backup", "dump", "--host", "db1")
        assert second.returncode == ExitCode.LOCKED, second.stderr
        assert "another logical dump of host db1 is running" in second.stderr

        time.sleep(LEASE_SECONDS + 1)  # past one lease period: only renewal keeps it live
        swept = cli(config, "cleanup", "--host", "db1", "--grace-hours", "0", "--json")
        assert swept.returncode == 0, swept.stderr
        assert '"removed": []' in swept.stdout
        assert held <= in_flight(session, s3, bucket)  # nothing of the running dump was touched
    finally:
        gated.gate.touch()
        _out, err = dump.communicate(timeout=300)
    assert dump.returncode == 0, err
    kinds = sorted(m.kind for m in session.catalog.list_backups("db1"))
    assert kinds == ["dump", "full"]
    checked = cli(config, "check", "--host", "db1")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_killed_dump_holds_nothing_once_its_lease_lapses(setup):
    config, session, gated, s3, bucket = setup
    dump = start_cli(config, "backup", "dump", "--host", "db1")
    try:
        gated.wait_until_held(dump)
        held = held_objects(session, s3, bucket)
    finally:
        os.killpg(dump.pid, signal.SIGKILL)
        dump.communicate(timeout=60)
    killed_at = time.monotonic()
    # Right after the kill its lease is still live: even a zero grace removes nothing.
    assert session.catalog.cleanup_orphans("db1", timedelta(0)) == []
    assert held <= in_flight(session, s3, bucket)
    while True:
        removed = session.catalog.cleanup_orphans("db1", timedelta(0))
        if removed:
            break
        assert time.monotonic() - killed_at < LEASE_SECONDS * 4, "the dead run's lease never lapsed"
        time.sleep(0.5)
    assert time.monotonic() - killed_at >= LEASE_SECONDS * 0.7  # renewed every ttl/4 until the kill
    assert in_flight(session, s3, bucket) == set()
    assert session.catalog.list_backups("db1") == []
    assert any("/leases/" in k for k in removed)  # the lapsed lease object is swept too
    assert list(session.repo.list("hosts/db1/leases/")) == []
    if s3 is not None:
        return  # moto reports every multipart upload as initiated in 2010: grace is not testable there
    # A grace period still applies to a lapsed lease's leftovers: a fresh kill is kept for an hour.
    gated.reset()
    dump = start_cli(config, "backup", "dump", "--host", "db1")
    try:
        gated.wait_until_held(dump)
    finally:
        os.killpg(dump.pid, signal.SIGKILL)
        dump.communicate(timeout=60)
    time.sleep(LEASE_SECONDS + 1)
    removed = session.catalog.cleanup_orphans("db1", timedelta(hours=1))
    assert [k for k in removed if "/leases/" not in k] == []  # only the dead run's lapsed lease went
    assert len(removed) == 1 and session.catalog.leased_ids("db1") == set()
    assert in_flight(session, s3, bucket)
