"""What the deploy tests share: the fleet config reached over SSH, the instance file the compose shape
uses rewritten for this machine's temp paths, and readers for PostgreSQL and the compute-log bucket."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.postgres import PostgresCluster, PostgresDatabase

ROOT = Path(__file__).resolve().parents[2]
COMPUTE_LOG_PREFIX = "compute-logs"


def ssh_fleet_config(make_config, sshd, tmp_path: Path) -> Path:
    """db1 reached over SSH (this machine is the DB host), backing up into a file repository; the
    client key and known_hosts copied beside the config, as an operator lays out /etc/backup-pipelines."""
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir(mode=0o700)
    for src in (sshd.client_key, sshd.known_hosts):
        shutil.copy(src, ssh_dir / src.name)
    (ssh_dir / sshd.client_key.name).chmod(0o600)
    make_config(
        host_overrides={
            "transport": {
                "kind": "ssh",
                "host": "127.0.0.1",
                "port": sshd.port,
                "user": sshd.user,
                "key_file": str(ssh_dir / sshd.client_key.name),
                "known_hosts_file": str(ssh_dir / sshd.known_hosts.name),
                "remote_command": f"{sys.executable} -m backup_pipelines.cli",
                "remote_config": str(tmp_path / "config.yaml"),
            }
        }
    )
    return tmp_path / "config.yaml"


def instance_file(mounts: list[Path], *, queued: bool = True) -> dict[str, Any]:
    """deploy/docker/dagster.yaml with the run containers' mounts pointed at this test's temp dirs
    (same path inside as outside), and, for the narrow test without a daemon, the default run
    coordinator (the queue needs dagster-daemon; the compose test has one)."""
    doc = yaml.safe_load((ROOT / "deploy" / "docker" / "dagster.yaml").read_text())
    doc["run_launcher"]["config"]["container_kwargs"]["volumes"] = [f"{p}:{p}" for p in mounts]
    if not queued:
        doc["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
    return doc


def stack_env(db: PostgresDatabase, s3_endpoint: str, bucket: str, config: Path) -> dict[str, str]:
    """The variables deploy/docker/dagster.yaml and the code location read."""
    return {
        **db.env,
        "DAGSTER_COMPUTE_LOG_BUCKET": bucket,
        "DAGSTER_COMPUTE_LOG_S3_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing-access-key",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BACKUP_PIPELINES_CONFIG": str(config),
    }


def wait_for_run(cluster: PostgresCluster, db: PostgresDatabase, run_id: str, timeout: float = 300) -> str:
    """Poll the runs table in PostgreSQL until the run ends; its final status."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = cluster.psql(f"SELECT status FROM runs WHERE run_id = '{run_id}'", db.name).strip()
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    raise AssertionError(f"run {run_id} still {status or 'absent'} after {timeout:.0f}s")


def event_counts(cluster: PostgresCluster, db: PostgresDatabase, run_id: str) -> dict[str, int]:
    rows = cluster.psql(
        f"SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = '{run_id}' "
        "AND dagster_event_type IS NOT NULL GROUP BY 1",
        db.name,
    )
    return {k: int(v) for k, v in (line.split("|") for line in rows.splitlines() if line)}


def failure_text(cluster: PostgresCluster, db: PostgresDatabase, run_id: str) -> str:
    """The failure events' messages, for an assertion that says why a run failed."""
    rows = cluster.psql(
        f"SELECT event FROM event_logs WHERE run_id = '{run_id}' "
        "AND dagster_event_type IN ('STEP_FAILURE', 'RUN_FAILURE', 'ENGINE_EVENT')",
        db.name,
    )
    return rows[-6000:]


def run_tags(cluster: PostgresCluster, db: PostgresDatabase, run_id: str) -> dict[str, str]:
    rows = cluster.psql(f"SELECT key, value FROM run_tags WHERE run_id = '{run_id}'", db.name)
    return dict(line.split("|", 1) for line in rows.splitlines() if line)


def compute_log_keys(s3_client: Any, bucket: str, run_id: str) -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=COMPUTE_LOG_PREFIX)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if run_id in o["Key"]]


def container_log_tail(container: Any, n: int = 3000) -> str:
    try:
        return container.logs().decode(errors="replace")[-n:]
    except Exception as exc:
        return f"(no logs: {exc})"
