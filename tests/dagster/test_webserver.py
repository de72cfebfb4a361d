"""The code location as operators meet it: `definitions validate`, and the webserver's GraphQL API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from backup_pipelines.core.mysqld import free_port

pytestmark = pytest.mark.dagster
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

QUERY = """{
  assetNodes { assetKey { path } groupName isPartitioned
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } } }
  workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on RepositoryLocation { repositories {
      schedules { name } sensors { name } jobs { name } } } } } } }
}"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o600)
    doc = {
        "repository": {"url": f"file://{tmp_path / 'repo'}"},
        "hosts": {
            h: {"datadir": "/var/lib/mysql", "socket": "/run/mysqld/mysqld.sock", "password_file": str(pw)}
            for h in ("db1", "db2")
        },
        "work_dir": str(tmp_path / "work"),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "home").mkdir()
    return {
        **os.environ,
        "BACKUP_PIPELINES_CONFIG": str(tmp_path / "config.yaml"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }


def test_definitions_validate(env):
    res = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "All code locations passed validation" in res.stdout + res.stderr


def test_without_a_config_the_location_says_which_variable_to_set(tmp_path):
    """No embedded estate is conjured up at load time: the operator is told what to set."""
    env = {k: v for k, v in os.environ.items() if k != "BACKUP_PIPELINES_CONFIG"}
    env["DAGSTER_HOME"] = str(tmp_path)
    res = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "BACKUP_PIPELINES_CONFIG is not set" in out and "./dev dagster" in out


def test_webserver_serves_the_graph(env, tmp_path):
    port = free_port()
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "webserver did not come up in 120s"
                time.sleep(0.5)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql",
            data=json.dumps({"query": QUERY}).encode(),
            headers={"Content-Type": "application/json"},
        )
        data = json.loads(urllib.request.urlopen(req, timeout=60).read())["data"]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assets = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert set(assets) == {
        "mysql/base_backup",
        "mysql/incremental_backup",
        "mysql/restore_verification",
        "mysql/staging_restore",
        "mysql/logical_dump",
        "mysql/retention",
        "mysql/binlog_archive",
    }
    assert all(n["isPartitioned"] for n in assets.values())
    checks = {
        k: sorted(c["name"] for c in n["assetChecksOrError"]["checks"])
        for k, n in assets.items()
        if n["assetChecksOrError"]["checks"]
    }
    assert checks == {
        "mysql/base_backup": ["base_freshness", "catalog_integrity"],
        "mysql/incremental_backup": ["chain_restorable", "rpo_freshness"],
        "mysql/restore_verification": ["verification_passed"],
        "mysql/staging_restore": ["staging_checks_passed"],
        "mysql/binlog_archive": ["binlog_freshness"],
    }
    (entry,) = data["workspaceOrError"]["locationEntries"]
    repo = entry["locationOrLoadError"]["repositories"][0]
    assert {s["name"] for s in repo["sensors"]} == {
        "restore_window",
        "verify_after_base",
        "rpo_monitor",
        "notify_on_failure",
        "prune_after_verification",
    }
    assert {s["name"] for s in repo["schedules"]} == {"base_backups", "incremental_backups_every_15m", "logical_dumps"}
    assert {"physical_backups", "restore_verification", "staging_restore", "logical_dumps", "retention"} <= {
        j["name"] for j in repo["jobs"]
    }


def test_the_demo_estate_runs_the_nightly_assets(tmp_path):
    """What `./dev dagster` offers a new user: a base backup and a logical dump of the demo host succeed."""
    demo = tmp_path / "demo"
    cli = str(BIN / "backup-pipelines")
    cfg = subprocess.run(
        [cli, "demo-env", "up", "--work-dir", str(demo)], capture_output=True, text=True, timeout=300, check=True
    ).stdout.strip()
    try:
        env = {**os.environ, "BACKUP_PIPELINES_CONFIG": cfg, "DAGSTER_HOME": str(tmp_path)}
        res = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "backup_pipelines.definitions",
             "--select", "mysql/base_backup,mysql/logical_dump", "--partition", "demo"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0 and "RUN_SUCCESS" in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
        listed = subprocess.run(
            [cli, "-c", cfg, "list", "--host", "demo", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        kinds = sorted(b["kind"] for b in json.loads(listed.stdout)["backups"])
        assert kinds == ["dump", "full"]
    finally:
        subprocess.run([cli, "demo-env", "down", "--work-dir", str(demo)], capture_output=True, timeout=120)
