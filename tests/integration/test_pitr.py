"""Point-in-time recovery on real MariaDB: binlog push, restore --at to the second, gaps refused."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.session import Session
from tests.fixtures.binlog import SteadyWriter, grant_archiver
from tests.fixtures.cli import cli
from tests.fixtures.mariadb import fingerprint_datadir

pytestmark = pytest.mark.integration


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def restore_and_compare(config: Path, tmp_path: Path, name: str, at: str, expected: dict) -> dict:
    target = tmp_path / "restores" / name
    out = cli(config, "restore", "--host", "db1", "--target-datadir", str(target), "--at", at, "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    got = fingerprint_datadir(target, tmp_path / "restores" / f"{name}.run")
    assert got == expected, f"restore --at {at} ({res['binlog']}) differs from the source at that second"
    return res


def test_push_and_restore_to_the_second(source, make_config, repo_key, tmp_path):
    grant_archiver(source)
    cfg = make_config(key_file=repo_key)
    config = tmp_path / "config.yaml"
    session = Session.open(cfg)
    with SteadyWriter(source) as w:
        run_physical_backup(session, "db1", "full")
        t1, fp1 = w.quiet_point()  # between the full and the incremental
        source.sql("FLUSH BINARY LOGS")  # the replay spans files
        run_physical_backup(session, "db1", "incremental")
        out = cli(config, "binlog", "push", "--host", "db1", "--json")
        assert out.returncode == 0, out.stderr
        t2, fp2 = w.quiet_point()  # after the incremental
        t3, fp3 = w.quiet_point()
        w.pause()
    out = cli(config, "binlog", "push", "--host", "db1", "--json")
    assert out.returncode == 0, out.stderr
    pushed = json.loads(out.stdout)
    assert pushed["gaps"] == [] and pushed["archived"], pushed
    assert w.commits > 50

    r1 = restore_and_compare(config, tmp_path, "t1", iso(t1), fp1)
    assert r1["backup_id"].endswith("-full") and r1["binlog"]["transactions"] > 0
    r2 = restore_and_compare(config, tmp_path, "t2", iso(t2).replace("Z", ""), fp2)  # zone-less = UTC
    assert r2["backup_id"].endswith("-incremental")
    restore_and_compare(config, tmp_path, "t3", iso(t3), fp3)

    out = cli(config, "check", "--host", "db1", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)["binlogs"]
    assert report["gaps"] == [] and report["latest_restorable"] >= iso(t3)
    out = cli(config, "verify", "--host", "db1", "--at", iso(t2), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["tables"]["pitr.ticks"]["checksum"] == fp2["pitr.ticks"]["checksum"]

    # After the newest archived point: refused with exit 3, the target untouched, the latest time named.
    target = tmp_path / "restores" / "future"
    out = cli(config, "restore", "--host", "db1", "--target-datadir", str(target), "--at", iso(t3 + 3600))
    assert out.returncode == 3, out.stderr
    assert "latest restorable time" in out.stderr and not target.exists()


def test_purged_binlog_is_a_gap_on_s3(source, make_config, s3_server, s3_bucket, tmp_path):
    """Purged before archived: push archives the rest and exits 4; a restore into the gap is refused; a
    newer full backup restores again, temporary tables spanning binlog files survive the replay, and
    `--gtid` stops on a transaction."""
    grant_archiver(source)
    cfg = make_config(f"s3://{s3_bucket}/repo", s3_endpoint=s3_server.endpoint_url)
    config = tmp_path / "config.yaml"
    session = Session.open(cfg)
    with SteadyWriter(source) as w:
        run_physical_backup(session, "db1", "full")
        assert cli(config, "binlog", "push", "--host", "db1").returncode == 0
        t_gap, _ = w.quiet_point()
        source.sql("FLUSH BINARY LOGS")
        w.quiet_point()
        source.sql("FLUSH BINARY LOGS")
        w.pause()
        files = [r[0] for r in source.sql("SHOW BINARY LOGS")]
        source.sql(f"PURGE BINARY LOGS TO '{files[-1]}'")
        w.resume()
        w.quiet_point()
        out = cli(config, "binlog", "push", "--host", "db1")
        assert out.returncode == 4, out.stderr
        assert files[0] in out.stderr and files[1] in out.stderr and "missing" in out.stderr, out.stderr

        target = tmp_path / "restores" / "gap"
        target.mkdir(parents=True)
        out = cli(config, "restore", "--host", "db1", "--target-datadir", str(target), "--at", iso(t_gap + 2))
        assert out.returncode == 4 and "latest restorable time" in out.stderr, out.stderr
        assert list(target.iterdir()) == []

        run_physical_backup(session, "db1", "full")  # continuity starts again here
        with source.server.connect("pitr") as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS kept (id INT PRIMARY KEY)")
            cur.execute("SET SESSION binlog_format = 'STATEMENT'")
            cur.execute("CREATE TEMPORARY TABLE scratch (id INT PRIMARY KEY)")
            cur.execute("INSERT INTO scratch SELECT seq FROM seq_1_to_25")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("INSERT INTO kept SELECT id FROM scratch")
        t_ok, fp_ok = w.quiet_point()
        w.pause()
        gtid = source.sql("SELECT @@gtid_binlog_pos")[0][0]
        fp_gtid = source.fingerprint()
        w.resume()
        w.quiet_point()
    out = cli(config, "binlog", "push", "--host", "db1", "--json")
    assert out.returncode == 4  # the old backup's gap is still retained
    restore_and_compare(config, tmp_path, "after-gap", iso(t_ok), fp_ok)
    out = cli(config, "check", "--host", "db1")
    assert out.returncode == 4 and "binlog gap" in out.stdout, out.stdout

    target = tmp_path / "restores" / "gtid"
    out = cli(config, "restore", "--host", "db1", "--target-datadir", str(target), "--gtid", gtid, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["binlog"]["last_gtid"] == gtid
    assert fingerprint_datadir(target, tmp_path / "restores" / "gtid.run") == fp_gtid


def test_stream_survives_sigkill_and_sigterm(source, make_config, repo_key, tmp_path):
    """SIGKILL + restart loses nothing and duplicates nothing; SIGTERM archives what it has and exits 0."""
    import signal
    import time

    from backup_pipelines.core.binlog.index import BinlogIndex

    grant_archiver(source)
    cfg = make_config(key_file=repo_key)
    config = tmp_path / "config.yaml"
    session = Session.open(cfg)

    def spools() -> set[Path]:
        return set((tmp_path / "work").glob("bp-binlog-stream-db1-*"))

    def start() -> subprocess.Popen[str]:
        before = spools()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backup_pipelines.cli",
                "-c",
                str(config),
                "binlog",
                "stream",
                "--host",
                "db1",
                "--interval",
                "0.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60  # streaming once its spool exists (start-up is slow on a busy box)
        while not spools() - before:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        return proc

    with SteadyWriter(source) as w:
        run_physical_backup(session, "db1", "full")
        proc = start()
        time.sleep(4)
        proc.kill()
        proc.wait()
        source.sql("FLUSH BINARY LOGS")  # rotation while nobody streams
        time.sleep(1)
        proc = start()
        t, fp = w.quiet_point()
        time.sleep(3)  # a few cycles past T: the heartbeat vouches for the quiet second
        lag_t = time.time()
        w.pause()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read()
    assert time.time() - lag_t < 30
    instances = BinlogIndex(session.catalog).instances("db1")
    for inst in instances:  # every byte exactly once: no hole, no overlap
        ends = 4
        for seg in inst.segments:
            assert seg.start == ends, (inst.name, [(s.start, s.end) for s in inst.segments])
            ends = seg.end
    assert len(instances) >= 2
    out = cli(config, "binlog", "push", "--host", "db1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["archived"] == [], "stream left bytes behind for push"
    restore_and_compare(config, tmp_path, "streamed", iso(t), fp)


def test_prune_drops_binlogs_no_retained_backup_needs(source, make_config, tmp_path):
    grant_archiver(source)
    cfg = make_config(host_overrides={"retention": {"keep_full_chains": 1}})
    config = tmp_path / "config.yaml"
    session = Session.open(cfg)
    source.sql("CREATE DATABASE app")
    source.sql("CREATE TABLE app.t (id INT PRIMARY KEY)")
    run_physical_backup(session, "db1", "full")
    source.sql("INSERT INTO app.t VALUES (1)")
    source.sql("FLUSH BINARY LOGS")
    source.sql("INSERT INTO app.t VALUES (2)")
    assert cli(config, "binlog", "push", "--host", "db1").returncode == 0
    source.sql("FLUSH BINARY LOGS")
    run_physical_backup(session, "db1", "full")  # replays from the third file: the first two are not needed
    source.sql("INSERT INTO app.t VALUES (3)")
    assert cli(config, "binlog", "push", "--host", "db1").returncode == 0
    out = cli(config, "prune", "--host", "db1", "--apply", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["binlogs"]
    assert [n.rsplit("-", 1)[1] for n in plan["delete"]] == ["binlog.000001", "binlog.000002"], plan
    status = json.loads(cli(config, "binlog", "status", "--host", "db1", "--json").stdout)
    assert [f["file"] for f in status["files"]] == ["binlog.000003"] and status["gaps"] == []
    assert cli(config, "check", "--host", "db1").returncode == 0
    listed = cli(config, "list", "--host", "db1")
    assert f"latest restorable time {status['latest_restorable']}" in listed.stdout, listed.stdout
    as_json = json.loads(cli(config, "list", "--host", "db1", "--json").stdout)
    assert as_json["binlogs"] == {k: status[k] for k in ("latest_restorable", "newest_archived_event", "gaps")}
    assert [b["kind"] for b in as_json["backups"]] == ["full"], as_json["backups"]  # the older chain was pruned
