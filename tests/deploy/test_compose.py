"""The whole compose stack (deploy/docker/docker-compose.yml) as an operator runs it: code server,
webserver and daemon in containers, a base and an incremental of a real MariaDB host launched through
the webserver's GraphQL API, queued, and each run by the daemon's DockerRunLauncher in its own container;
the ops reach the DB host (this machine) over SSH; events in PostgreSQL, compute logs in S3.

Slow (an image build and three Dagster services under a private dockerd): `./dev deploy-test` runs it,
`./dev test` does not collect it (tests/deploy/conftest.py). PostgreSQL is the private cluster fixture,
not the compose file's `postgres` profile: nothing can be pulled here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from backup_pipelines.core.mysqld import free_port
from tests.deploy.stack import (
    ROOT,
    compute_log_keys,
    event_counts,
    failure_text,
    instance_file,
    ssh_fleet_config,
    stack_env,
    wait_for_run,
)
from tests.fixtures.mariadb import load_shop

# Measured here: 110 s with the image build at a load of ~7 on 2 cores; over 10 minutes at a load of ~30.
pytestmark = [pytest.mark.integration, pytest.mark.dagster, pytest.mark.slow, pytest.mark.timeout(1800)]

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId status } }
  ... on PythonError { message } ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid {
  errors { message } } } }"""


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(req, timeout=120).read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def _launch(port: int, asset: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": "backup_pipelines",
            "repositoryName": "__repository__",
            "jobName": "physical_backups",
            "assetSelection": [{"path": ["mysql", asset]}],
        },
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "db1"}]},
    }
    res = _graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert res["__typename"] == "LaunchRunSuccess", res
    return res["run"]["runId"]


def _compose(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "deploy" / "docker" / "docker-compose.yml"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_compose_stack_runs_base_and_incremental_in_their_own_containers(
    docker_daemon, app_image, postgres_server, postgres_db, s3_server, s3_bucket, source, make_config, sshd, tmp_path
):
    started = time.monotonic()
    config = ssh_fleet_config(make_config, sshd, tmp_path)
    load_shop(source, orders=500, accounts=20)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "dagster.yaml").write_text(yaml.safe_dump(instance_file([tmp_path])))
    grpc_port, web_port = free_port(), free_port()
    (deploy / "workspace.yaml").write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {"grpc_server": {"host": "127.0.0.1", "port": grpc_port, "location_name": "backup_pipelines"}}
                ]
            }
        )
    )
    env = {
        **os.environ,
        **stack_env(postgres_db, s3_server.endpoint_url, s3_bucket, config),
        "DOCKER_HOST": docker_daemon.url,
        "COMPOSE_PROJECT_NAME": f"bp{os.getpid()}",
        "BACKUP_PIPELINES_IMAGE": app_image,
        "BACKUP_PIPELINES_ETC": str(tmp_path),
        "DAGSTER_INSTANCE_FILE": str(deploy / "dagster.yaml"),
        "DAGSTER_WORKSPACE_FILE": str(deploy / "workspace.yaml"),
        "DAGSTER_GRPC_PORT": str(grpc_port),
        "DAGSTER_WEBSERVER_PORT": str(web_port),
        "DOCKER_SOCKET": str(docker_daemon.socket),
    }
    client = docker_daemon.client()
    up = _compose(["up", "-d"], env)
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                data = _graphql(
                    web_port,
                    "{ workspaceOrError { ... on Workspace { locationEntries { name "
                    "locationOrLoadError { __typename } } } } }",
                )
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, _compose(["logs", "--tail=60"], env).stdout[-4000:]
            time.sleep(3)
        stack_up = time.monotonic() - started

        runs = {}
        for asset in ("base_backup", "incremental_backup"):
            if asset == "incremental_backup":
                source.sql("INSERT INTO shop.orders (account, amount, note) VALUES (1, 1, 'compose')")
            run_id = _launch(web_port, asset)
            status = wait_for_run(postgres_server, postgres_db, run_id, timeout=420)
            assert status == "SUCCESS", failure_text(postgres_server, postgres_db, run_id)
            runs[asset] = run_id
    finally:
        logs = _compose(["logs", "--tail=40"], env).stdout
        down = _compose(["down", "--volumes"], env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not client.containers.list(filters={"label": f"com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}"})

    containers = {}
    for asset, run_id in runs.items():
        (c,) = client.containers.list(all=True, filters={"label": f"dagster/run_id={run_id}"})
        assert app_image in c.image.tags and c.attrs["State"]["ExitCode"] == 0, logs
        containers[asset] = c.id
        events = event_counts(postgres_server, postgres_db, run_id)
        # Queued by the webserver, dequeued by the daemon, materialized in the run's container.
        assert events.get("PIPELINE_ENQUEUED") == 1 and events.get("PIPELINE_SUCCESS") == 1, events
        assert events.get("ASSET_MATERIALIZATION") == 1, events
        assert compute_log_keys(s3_server.client(), s3_bucket, run_id)
    assert len(set(containers.values())) == 2
    listed = subprocess.run(
        [sys.executable, "-m", "backup_pipelines.cli", "-c", str(config), "list", "--host", "db1", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [b["kind"] for b in json.loads(listed)["backups"]] == ["full", "incremental"]
    print(f"compose stack: up in {stack_up:.0f}s, whole test body {time.monotonic() - started:.0f}s")
