"""Offsite copies with real duplicity + GPG against a real S3-compatible server, and the disaster drill."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import uuid

import boto3
import pytest

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.errors import ExitCode, WrongKeyError
from backup_pipelines.core.offsite import offsite_backup, offsite_restore
from backup_pipelines.core.session import Session
from tests.fixtures.mariadb import fingerprint_datadir, load_shop, write_secret

pytestmark = pytest.mark.integration


def cli(config, *args):
    return subprocess.run(
        [sys.executable, "-m", "backup_pipelines.cli", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def offsite_bucket(s3_server):
    name = f"offsite-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def offsite_cfg(s3_server, offsite_bucket, tmp_path):
    def make(passphrase: str = "correct horse battery staple", **extra):
        home = tmp_path / "gnupg"
        home.mkdir(mode=0o700, exist_ok=True)
        doc = {
            "target_url": f"boto3+s3://{offsite_bucket}/mysql",
            "s3_endpoint_url": s3_server.endpoint_url,
            "s3_region": "us-east-1",
            "gnupg_home": str(home),
            "archive_dir": str(tmp_path / "duplicity-cache"),
            "volsize_mb": 5,
            "num_retries": 2,
            **extra,
        }
        if "encrypt_key" not in extra:
            doc["passphrase_file"] = str(write_secret(tmp_path / "secrets" / f"offsite-{len(passphrase)}", passphrase))
        return doc

    return make


def _backups(source, session, n_incrementals=1):
    load_shop(source)
    run_physical_backup(session, "db1", "full")
    for i in range(n_incrementals):
        source.sql(
            "INSERT INTO shop.orders (account, amount, note) SELECT 1, %s, 'offsite' FROM seq_1_to_300",
            (i,),
            database="shop",
        )
        run_physical_backup(session, "db1", "incremental")


def test_full_incremental_verify_status_and_disaster_drill(source, make_config, repo_key, offsite_cfg, tmp_path):
    cfg = make_config(key_file=repo_key, extra={"offsite": offsite_cfg()})
    s = Session.open(cfg)
    _backups(source, s)
    first = offsite_backup(s)
    assert first["newest_set"]["type"] == "full" and first["verify"]["passed"]
    assert "0 differences found" in first["verify"]["message"]
    source.sql("UPDATE shop.accounts SET balance = balance - 1 WHERE id = 7")
    run_physical_backup(s, "db1", "incremental")
    expected = source.fingerprint()
    out = cli(tmp_path / "config.yaml", "offsite", "backup", "--json")
    assert out.returncode == 0, out.stderr
    second = json.loads(out.stdout)
    assert second["newest_set"]["type"] == "inc" and second["passphrase_checked"] is True
    st = second["status"]
    assert st["chain_count"] == 1 and st["set_count"] == 2 and st["volume_count"] >= 2 and st["last_full"]
    listed = json.loads(cli(tmp_path / "config.yaml", "offsite", "status", "--json").stdout)
    assert [x["type"] for x in listed["chains"][0]["sets"]] == ["full", "inc"]

    # Disaster: the primary repository is gone. Fetch the offsite copy, restore the newest chain from it.
    primary = tmp_path / "repository"
    shutil.rmtree(primary)
    restored_repo = tmp_path / "from-offsite"
    res = cli(tmp_path / "config.yaml", "offsite", "restore", "--to", str(restored_repo), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["hosts"] == ["db1"]
    target = tmp_path / "datadir"
    rc = cli(
        tmp_path / "config.yaml",
        "--repository",
        info["repository_url"],
        "restore",
        "--host",
        "db1",
        "--target-datadir",
        str(target),
    )
    assert rc.returncode == 0, rc.stderr
    assert fingerprint_datadir(target, tmp_path / "run") == expected


def test_restored_copy_is_byte_identical(source, make_config, offsite_cfg, tmp_path):
    cfg = make_config(extra={"offsite": offsite_cfg()})
    s = Session.open(cfg)
    _backups(source, s, n_incrementals=0)
    offsite_backup(s)
    dest = tmp_path / "copy"
    offsite_restore(cfg, dest)
    primary = tmp_path / "repository" / "hosts"
    files = sorted(p.relative_to(primary) for p in primary.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(dest / "hosts") for p in (dest / "hosts").rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(primary, dest / "hosts", [str(f) for f in files], shallow=False)
    assert len(match) == len(files) and not mismatch and not errors  # (reports under offsite/ come after the copy)


def test_wrong_passphrase_is_a_clear_error(source, make_config, offsite_cfg, tmp_path):
    cfg = make_config(extra={"offsite": offsite_cfg()})
    s = Session.open(cfg)
    _backups(source, s, n_incrementals=0)
    offsite_backup(s)
    run_physical_backup(s, "db1", "incremental")
    make_config(extra={"offsite": offsite_cfg(passphrase="wrong")}, name="wrong.yaml")
    res = cli(tmp_path / "wrong.yaml", "offsite", "backup")
    assert res.returncode == ExitCode.INTEGRITY, res.stderr
    assert "passphrase does not decrypt the existing offsite chain" in res.stderr and "Traceback" not in res.stderr
    assert "nothing was uploaded" in res.stderr
    res = cli(tmp_path / "wrong.yaml", "offsite", "restore", "--to", str(tmp_path / "x"))
    assert res.returncode == ExitCode.INTEGRITY and "GPG failed" in res.stderr and "Traceback" not in res.stderr
    # the right passphrase still extends the chain
    assert cli(tmp_path / "config.yaml", "offsite", "backup").returncode == 0


def test_public_key_mode(source, make_config, offsite_cfg, tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Offsite <offsite@example.invalid>",
            "default",
            "default",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    fpr = next(
        line.split(":")[9]
        for line in subprocess.run(
            ["gpg", "--homedir", str(home), "--list-keys", "--with-colons"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if line.startswith("fpr")
    )
    cfg = make_config(extra={"offsite": offsite_cfg(encrypt_key=fpr)})
    s = Session.open(cfg)
    _backups(source, s, n_incrementals=0)
    report = offsite_backup(s)
    assert report["verify"]["passed"] and report["passphrase_checked"] is False
    offsite_restore(cfg, tmp_path / "copy")
    assert (tmp_path / "copy" / "hosts" / "db1").is_dir()
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_missing_bucket_says_so(source, make_config, offsite_cfg, tmp_path):
    cfg = make_config(extra={"offsite": {**offsite_cfg(), "target_url": "boto3+s3://no-such-bucket/x"}})
    s = Session.open(cfg)
    _backups(source, s, n_incrementals=0)
    with pytest.raises(Exception) as err:
        offsite_backup(s)
    assert "no-such-bucket" in str(err.value) or "bucket" in str(err.value).lower()
    assert not isinstance(err.value, WrongKeyError)


def test_a_corrupted_offsite_volume_fails_verification(
    source, make_config, offsite_cfg, offsite_bucket, s3_server, tmp_path
):
    cfg = make_config(extra={"offsite": offsite_cfg()})
    s = Session.open(cfg)
    _backups(source, s, n_incrementals=0)
    offsite_backup(s)
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    volume = next(o["Key"] for o in s3.list_objects_v2(Bucket=offsite_bucket)["Contents"] if ".difftar.gpg" in o["Key"])
    body = bytearray(s3.get_object(Bucket=offsite_bucket, Key=volume)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=offsite_bucket, Key=volume, Body=bytes(body))
    run_physical_backup(s, "db1", "incremental")
    res = cli(tmp_path / "config.yaml", "offsite", "backup", "--json")
    assert res.returncode == ExitCode.VERIFY_FAILED, res.stderr
    report = json.loads(res.stdout)
    assert report["verify"]["passed"] is False and "offsite verify failed" in res.stderr
