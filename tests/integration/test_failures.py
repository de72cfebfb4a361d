"""Failure drills: each gives a clear error and an exit code, and loses nothing already backed up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import psutil
import pytest

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.errors import ExitCode, StorageError, ToolError
from backup_pipelines.core.restore import restore_chain
from backup_pipelines.core.session import Session
from tests.fixtures.cli import cli
from tests.fixtures.mariadb import BACKUP_PASSWORD, fingerprint_datadir, load_shop, write_secret

pytestmark = pytest.mark.integration


def kill_children_named(name: str) -> int:
    killed = 0
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == name:
                child.kill()
                killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


@pytest.fixture
def base(source, make_config, tmp_path):
    """A file repository holding a full and one incremental; returns (config path, session, manifests)."""
    cfg = make_config()
    load_shop(source)
    session = Session.open(cfg)
    full = run_physical_backup(session, "db1", "full")
    source.sql("INSERT INTO shop.orders (account, amount, note) VALUES (1, 2, 'after full')")
    inc = run_physical_backup(session, "db1", "incremental")
    return tmp_path / "config.yaml", session, [full, inc], source.fingerprint()


def _listed(config: Path) -> list[str]:
    out = cli(config, "list", "--host", "db1", "--json")
    assert out.returncode == 0, out.stderr
    return [e["id"] for e in json.loads(out.stdout)["backups"]]


def test_tool_killed_mid_stream_commits_nothing(base, source, tmp_path):
    config, session, good, expected = base
    source.sql(
        "INSERT INTO shop.orders (account, amount, note) SELECT 1, 1, REPEAT('z', 150) FROM seq_1_to_20000",
        database="shop",
    )
    killed = []

    def progress(done: int) -> None:
        if done > 2 * 1024 * 1024 and not killed:
            killed.append(kill_children_named("mariabackup"))

    with pytest.raises(ToolError) as err:
        run_physical_backup(session, "db1", "incremental", progress=progress)
    assert killed == [1]
    assert "killed by signal 9" in str(err.value) and err.value.host == "db1"
    assert err.value.exit_code == ExitCode.TOOL_FAILED
    assert _listed(config) == [m.id for m in good]
    repo_root = tmp_path / "repository"
    assert not [p for p in repo_root.rglob("*") if p.is_file() and ".partial-" in p.name]
    # the next incremental chains to the last good backup and everything restores
    nxt = run_physical_backup(session, "db1", "incremental")
    assert nxt.parent_id == good[-1].id
    restore_chain(session, "db1", tmp_path / "r", backup_id=good[-1].id)
    assert fingerprint_datadir(tmp_path / "r", tmp_path / "run") == expected


def test_tool_without_success_line_is_a_failure(base, make_config, tmp_path):
    config, _, good, _ = base
    wrapper = tmp_path / "bin" / "mariabackup-truncating"
    wrapper.parent.mkdir()
    wrapper.write_text('#!/bin/sh\nexec 2>/dev/null\nmariabackup "$@" | head -c 1000000\nexit 0\n')
    wrapper.chmod(0o755)
    make_config(host_overrides={"binary": str(wrapper)})
    res = cli(config, "backup", "incremental", "--host", "db1")
    assert res.returncode == ExitCode.TOOL_FAILED
    assert "never printed 'completed OK!'" in res.stderr and "db1" in res.stderr
    assert _listed(config) == [m.id for m in good]


def test_s3_server_stopped_mid_upload(source, make_config, tmp_path, s3_server, s3_bucket):
    cfg = make_config(f"s3://{s3_bucket}/repo", s3_endpoint=s3_server.endpoint_url)
    cfg = cfg.model_copy(
        update={
            "repository": cfg.repository.model_copy(
                update={"s3": cfg.repository.s3.model_copy(update={"max_attempts": 3})}
            )
        }
    )
    load_shop(source, orders=40000)
    session = Session.open(cfg)
    full = run_physical_backup(session, "db1", "full")
    expected = source.fingerprint()
    source.sql("UPDATE shop.orders SET note = REPEAT('u', 180)")
    stopped = []

    def progress(done: int) -> None:
        if done > 6 * 1024 * 1024 and not stopped:
            s3_server.stop()
            stopped.append(done)

    try:
        with pytest.raises(StorageError) as err:
            run_physical_backup(session, "db1", "incremental", progress=progress)
    finally:
        s3_server.start()
    assert stopped and err.value.exit_code == ExitCode.STORAGE
    assert s3_bucket in str(err.value) or "repo" in str(err.value)
    session = Session.open(cfg)
    assert [m.id for m in session.catalog.list_backups("db1")] == [full.id]
    # the abort could not reach the server: the orphaned upload is cleaned up on the next run
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    session.catalog.cleanup_orphans("db1", __import__("datetime").timedelta(0))
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    restore_chain(session, "db1", tmp_path / "r")
    assert fingerprint_datadir(tmp_path / "r", tmp_path / "run") == expected
    assert run_physical_backup(session, "db1", "incremental").parent_id == full.id


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_flipped_byte_is_caught(kind, request, source, make_config, repo_key, tmp_path):
    if kind == "s3":
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        cfg = make_config(f"s3://{bucket}/p", s3_endpoint=server.endpoint_url)
    else:
        cfg = make_config(key_file=repo_key)
    load_shop(source)
    session = Session.open(cfg)
    full = run_physical_backup(session, "db1", "full")
    at_full = source.fingerprint()
    source.sql("DELETE FROM shop.orders WHERE id < 100")
    inc = run_physical_backup(session, "db1", "incremental")
    key = inc.objects[0].key
    if kind == "file":
        path = tmp_path / "repository" / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    else:
        s3 = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        obj = bytearray(s3.get_object(Bucket=bucket, Key=f"p/{key}")["Body"].read())
        obj[len(obj) // 2] ^= 0x40
        s3.put_object(Bucket=bucket, Key=f"p/{key}", Body=bytes(obj))
    target = tmp_path / "restore"
    res = cli(tmp_path / "config.yaml", "restore", "--host", "db1", "--target-datadir", str(target))
    assert res.returncode == ExitCode.INTEGRITY, res.stderr
    assert "checksum mismatch" in res.stderr and key in res.stderr and inc.id in res.stderr
    assert not target.exists() or not any(target.iterdir())
    assert not list(tmp_path.glob(".restore.bp-restore-*"))
    ver = cli(tmp_path / "config.yaml", "verify", "--host", "db1", "--json")
    assert ver.returncode == ExitCode.VERIFY_FAILED
    assert json.loads(ver.stdout)["passed"] is False
    # the full is untouched and still restores
    restore_chain(session, "db1", tmp_path / "r-full", backup_id=full.id)
    assert fingerprint_datadir(tmp_path / "r-full", tmp_path / "run") == at_full


def test_wrong_key_and_key_rotation(source, make_config, repo_key, tmp_path):
    cfg = make_config(key_file=repo_key)
    load_shop(source)
    full = run_physical_backup(Session.open(cfg), "db1", "full")
    expected = source.fingerprint()
    other = write_secret(
        tmp_path / "secrets" / "other.key",
        __import__("backup_pipelines.core.crypto", fromlist=["x"]).generate_key_text(),
    )
    make_config(key_file=other, name="wrong.yaml")
    res = cli(tmp_path / "wrong.yaml", "restore", "--host", "db1", "--target-datadir", str(tmp_path / "r"))
    assert res.returncode == ExitCode.INTEGRITY
    assert "encrypted with key id" in res.stderr and "decryption_key_files" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r").exists()
    # rotation: the new key writes, the old one still reads
    rotated = make_config(key_file=other, decryption_key_files=[repo_key], name="rotated.yaml")
    s = Session.open(rotated)
    inc = run_physical_backup(s, "db1", "incremental")
    assert inc.encryption and full.encryption and inc.encryption.key_id != full.encryption.key_id
    restore_chain(s, "db1", tmp_path / "r2", backup_id=full.id)
    assert fingerprint_datadir(tmp_path / "r2", tmp_path / "run") == expected


def test_non_empty_target_is_refused_and_untouched(base, tmp_path):
    config, _, _, _ = base
    target = tmp_path / "precious"
    target.mkdir()
    (target / "ibdata1").write_bytes(b"production data")
    res = cli(config, "restore", "--host", "db1", "--target-datadir", str(target))
    assert res.returncode == ExitCode.REFUSED and "not empty" in res.stderr
    assert [p.name for p in target.iterdir()] == ["ibdata1"]
    assert (target / "ibdata1").read_bytes() == b"production data"
    (tmp_path / "afile").write_text("x")
    res = cli(config, "restore", "--host", "db1", "--target-datadir", str(tmp_path / "afile"))
    assert res.returncode == ExitCode.REFUSED and (tmp_path / "afile").read_text() == "x"


def test_missing_incremental_breaks_only_later_points(base, source, tmp_path):
    config, session, good, _ = base
    full, inc1 = good
    at_inc2 = None
    source.sql("INSERT INTO shop.orders (account, amount, note) VALUES (2, 3, 'inc2')")
    inc2 = run_physical_backup(session, "db1", "incremental")
    at_inc2 = source.fingerprint()
    assert at_inc2
    session.repo.delete([session.catalog.manifest_key("db1", inc1.id)])
    res = cli(config, "restore", "--host", "db1", "--target-datadir", str(tmp_path / "r"), "--backup-id", inc2.id)
    assert res.returncode == ExitCode.INTEGRITY and inc1.id in res.stderr and "missing" in res.stderr
    chk = cli(config, "check", "--host", "db1")
    assert chk.returncode == ExitCode.INTEGRITY and inc1.id in chk.stdout
    # extending a broken chain is refused; a new full starts a healthy one
    res = cli(config, "backup", "incremental", "--host", "db1")
    assert res.returncode == ExitCode.INTEGRITY and "full backup" in res.stderr
    assert (
        cli(
            config,
            "restore",
            "--host",
            "db1",
            "--target-datadir",
            str(tmp_path / "rf"),
            "--backup-id",
            full.id,
        ).returncode
        == 0
    )
    assert cli(config, "backup", "full", "--host", "db1").returncode == 0
    assert cli(config, "backup", "incremental", "--host", "db1").returncode == 0


def test_incremental_without_full_is_a_clear_error(source, make_config, tmp_path):
    make_config()
    res = cli(tmp_path / "config.yaml", "backup", "incremental", "--host", "db1")
    assert res.returncode == ExitCode.NOT_FOUND and "backup full --host db1" in res.stderr


def test_password_never_in_argv_output_or_repository(source, make_config, tmp_path):
    spy = tmp_path / "bin" / "mariabackup-spy"
    spy.parent.mkdir()
    log = tmp_path / "spy.log"
    spy.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        "cnf=$(echo \"$1\" | sed 's/--defaults-extra-file=//')\n"
        f'stat -c %a "$cnf" >> {log}\n'
        'exec mariabackup "$@"\n'
    )
    spy.chmod(0o755)
    make_config(host_overrides={"binary": str(spy)})
    load_shop(source)
    res = cli(tmp_path / "config.yaml", "-v", "backup", "full", "--host", "db1", "--json")
    assert res.returncode == 0, res.stderr
    argv, mode = log.read_text().splitlines()
    assert mode == "600" and "--defaults-extra-file=" in argv
    cnf = Path(argv.split()[0].split("=", 1)[1])
    assert not cnf.exists() and not cnf.parent.exists()
    assert BACKUP_PASSWORD not in argv and BACKUP_PASSWORD not in res.stdout + res.stderr
    for p in (tmp_path / "repository").rglob("manifest.json"):
        assert BACKUP_PASSWORD.encode() not in p.read_bytes()
    assert os.stat(tmp_path / "secrets" / "backup.password").st_mode & 0o777 == 0o600
