"""deploy/helm/values.yaml and deploy/docker/dagster.yaml checked as far as this machine allows: no helm
binary and no cluster, so the sections the chart turns into the instance's dagster.yaml are loaded through
the pinned libraries' own config schemas (dagster-k8s's K8sRunLauncher, dagster-aws's
S3ComputeLogManager, dagster's instance schema) and compared with deploy/dagster.yaml's limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_docker import DockerRunLauncher
from dagster_k8s import K8sRunLauncher

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _load(rel: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / rel).read_text())


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _snake_keys(value: Any, keep: tuple[str, ...] = ()) -> Any:
    """camelCase chart keys to the instance's snake_case; values under `keep` keys stay as they are."""
    if isinstance(value, dict):
        return {_snake(k): (v if k in keep else _snake_keys(v, keep)) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v, keep) for v in value]
    return value


def _valid(config_type: Any, value: dict[str, Any]) -> dict[str, Any]:
    result = process_config(config_type, value)
    assert result.success, [e.message for e in result.errors]
    return result.value


def test_helm_run_launcher_is_a_valid_k8s_run_launcher_config():
    values = _load("deploy/helm/values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    # As the chart renders it: secret/config-map sources by name, volumes as Kubernetes objects.
    config = {
        "image_pull_policy": chart["imagePullPolicy"],
        "load_incluster_config": chart["loadInclusterConfig"],
        "env_secrets": [s["name"] for s in chart["envSecrets"]],
        "env_vars": chart["envVars"],
        "volumes": chart["volumes"],
        "volume_mounts": _snake_keys(chart["volumeMounts"]),
        "labels": chart["labels"],
        "fail_pod_on_run_failure": chart["failPodOnRunFailure"],
        "instance_config_map": "dagster-instance",
        "service_account_name": "dagster",
    }
    resolved = _valid(K8sRunLauncher.config_type(), config)
    assert resolved["volume_mounts"][0]["mount_path"] == "/etc/backup-pipelines"
    assert "BACKUP_PIPELINES_CONFIG=/etc/backup-pipelines/config.yaml" in resolved["env_vars"]
    # The code location's pods mount the same fleet secret as the run pods.
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["volumes"] == chart["volumes"] and deployment["volumeMounts"] == chart["volumeMounts"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "backup_pipelines.definitions"]


def test_helm_compute_logs_are_a_valid_s3_compute_log_manager_config():
    values = _load("deploy/helm/values.yaml")
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    chart = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    resolved = _valid(S3ComputeLogManager.config_type(), _snake_keys(chart))
    assert resolved["prefix"] == "compute-logs" and resolved["upload_interval"] == 30


def test_every_shape_has_the_same_limits():
    """The one-run-per-host limit and the mysql_backups pool are the same on one machine, in compose
    and on Kubernetes; the helm concurrency section is the instance's, camelCased."""
    single = _load("deploy/dagster.yaml")
    docker = _load("deploy/docker/dagster.yaml")
    helm = _load("deploy/helm/values.yaml")
    assert docker["concurrency"] == single["concurrency"]
    chart = helm["concurrency"]
    assert chart.pop("enabled") is True
    assert _snake_keys(chart, keep=("value",)) == single["concurrency"]
    coordinator = (single["run_coordinator"]["module"], single["run_coordinator"]["class"])
    assert (docker["run_coordinator"]["module"], docker["run_coordinator"]["class"]) == coordinator
    chart_coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert chart_coordinator["type"] == "CustomRunCoordinator"
    custom = chart_coordinator["config"]["customRunCoordinator"]
    assert (custom["module"], custom["class"]) == coordinator
    assert _snake_keys(helm["dagsterDaemon"]["runMonitoring"]) | {"enabled": True} == {
        **single["run_monitoring"],
        "enabled": True,
    }
    assert _snake_keys(helm["retention"], keep=("purgeAfterDays",)) | {"enabled": True} == {
        **{k: _snake_keys(v, keep=("purgeAfterDays",)) for k, v in single["retention"].items()},
        "enabled": True,
    }


def test_docker_instance_file_passes_the_instance_schema(monkeypatch):
    docker = _load("deploy/docker/dagster.yaml")
    wanted = set(re.findall(r"\{env: (\w+)\}", (ROOT / "deploy/docker/dagster.yaml").read_text()))
    for name in wanted:
        monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else f"value-of-{name}")
    _valid(dagster_instance_config_schema(), docker)
    launcher = docker["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    resolved = _valid(DockerRunLauncher.config_type(), launcher["config"])
    assert resolved["network"] == "host"
    # Every variable the instance file reads is passed on to the run containers.
    assert wanted <= set(resolved["env_vars"]), wanted - set(resolved["env_vars"])
    assert docker["compute_logs"]["class"] == "S3ComputeLogManager"
    _valid(S3ComputeLogManager.config_type(), docker["compute_logs"]["config"])
