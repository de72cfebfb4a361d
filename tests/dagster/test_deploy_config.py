"""deploy/dagster.yaml loads into a real instance with the per-host run limit and the backup pool."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test

pytestmark = pytest.mark.dagster
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


def test_instance_enforces_one_run_per_host(tmp_path):
    overrides = yaml.safe_load(DEPLOY.read_text())
    with instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        limits = concurrency.run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
        assert concurrency.pool_config.default_pool_limit == 8
