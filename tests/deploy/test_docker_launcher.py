"""The narrow CI test of the docker shape: the image builds offline, the code location serves the
definitions over gRPC from its container, and one run goes through DockerRunLauncher into a container
of its own, with its events in PostgreSQL and its compute logs in (loopback) S3.

The full compose stack (webserver, daemon, run queue, base + incremental) is tests/deploy/test_compose.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from backup_pipelines.core.mysqld import free_port
from tests.deploy.stack import (
    compute_log_keys,
    container_log_tail,
    event_counts,
    failure_text,
    instance_file,
    run_tags,
    ssh_fleet_config,
    stack_env,
    wait_for_run,
)
from tests.fixtures.mariadb import load_shop

pytestmark = [pytest.mark.integration, pytest.mark.dagster]
BIN = Path(sys.executable).parent
DUMP_GRANTS = "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO 'backup'@'localhost'"


def _dagster(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dagster"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_run_in_its_own_container_from_the_code_server(
    docker_daemon, app_image, postgres_server, postgres_db, s3_server, s3_bucket, source, make_config, sshd, tmp_path
):
    config = ssh_fleet_config(make_config, sshd, tmp_path)
    load_shop(source, orders=200, accounts=20)
    source.sql(DUMP_GRANTS)
    mounts = [tmp_path, sshd.client_key.parent]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_file(mounts, queued=False)))
    env = stack_env(postgres_db, s3_server.endpoint_url, s3_bucket, config)
    client = docker_daemon.client()

    port = free_port()
    code_server = client.containers.run(
        app_image,
        [
            "dagster",
            "code-server",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "backup_pipelines.definitions",
            "--location-name",
            "backup_pipelines",
        ],
        environment={**env, "DAGSTER_CURRENT_IMAGE": app_image},
        volumes={str(p): {"bind": str(p), "mode": "rw"} for p in mounts}
        | {str(home / "dagster.yaml"): {"bind": "/opt/dagster/dagster_home/dagster.yaml", "mode": "ro"}},
        network_mode="host",
        detach=True,
    )
    host_env = {
        **os.environ,
        **env,
        "DAGSTER_HOME": str(home),
        "DOCKER_HOST": docker_daemon.url,
    }
    grpc = ["--grpc-host", "127.0.0.1", "--grpc-port", str(port)]
    try:
        # The definitions, as the containerised code server serves them.
        deadline = time.monotonic() + 180
        while True:
            listed = _dagster(["job", "list", *grpc], host_env, timeout=120)
            if listed.returncode == 0:
                break
            code_server.reload()
            assert code_server.status == "running", container_log_tail(code_server)
            assert time.monotonic() < deadline, f"code server not serving: {listed.stderr[-1500:]}"
            time.sleep(2)
        assert {"physical_backups", "logical_dumps", "restore_verification"} <= set(listed.stdout.split())

        run_id = str(uuid.uuid4())
        launched = _dagster(
            [
                "job",
                "launch",
                *grpc,
                "-j",
                "logical_dumps",
                "--run-id",
                run_id,
                "--tags",
                '{"dagster/partition": "db1"}',
            ],
            host_env,
        )
        assert launched.returncode == 0, launched.stderr[-3000:]
        status = wait_for_run(postgres_server, postgres_db, run_id)
        (run_container,) = client.containers.list(all=True, filters={"label": f"dagster/run_id={run_id}"})
        assert status == "SUCCESS", failure_text(postgres_server, postgres_db, run_id)
    finally:
        code_server.remove(force=True)

    # The run ran in a container of its own, from the code location's image, and exited cleanly.
    run_container.reload()
    assert run_container.id != code_server.id
    assert app_image in run_container.image.tags and run_container.attrs["State"]["ExitCode"] == 0
    assert run_container.attrs["HostConfig"]["NetworkMode"] == "host"
    assert run_tags(postgres_server, postgres_db, run_id)["docker/container_id"] == run_container.id
    # Its events are in PostgreSQL, with the dump's materialization.
    events = event_counts(postgres_server, postgres_db, run_id)
    assert events.get("ASSET_MATERIALIZATION") == 1 and events.get("PIPELINE_SUCCESS") == 1, events
    # The dump was taken on the DB host over SSH, and the run's compute logs are in the bucket.
    assert (
        "dump"
        in subprocess.run(
            [sys.executable, "-m", "backup_pipelines.cli", "-c", str(config), "list", "--host", "db1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    keys = compute_log_keys(s3_server.client(), s3_bucket, run_id)
    assert any(k.endswith((".out", ".err")) for k in keys), keys
