"""Loading the code location: no side effects, no unstable-API warnings, kinds, one restore window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import date
from pathlib import Path

import pytest
import yaml
from dagster import AssetMaterialization, BetaWarning, PreviewWarning, build_sensor_context

from backup_pipelines.definitions import CONFIG_ENV, ConfigNotSet, build_definitions, defs
from backup_pipelines.defs.keys import BASE, DUMP, INCREMENTAL, STAGING, VERIFICATION
from backup_pipelines.defs.partitions import RESTORE_DAYS, parse_restore_point, window_changes

pytestmark = pytest.mark.dagster
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, engines: dict[str, str], window: int = 60) -> Path:
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o600)
    doc = {
        "repository": {"url": f"file://{tmp_path / 'repo'}"},
        "hosts": {
            h: {"engine": e, "datadir": "/var/lib/mysql", "socket": "/run/mysqld/mysqld.sock", "password_file": str(pw)}
            for h, e in engines.items()
        },
        "orchestration": {"restore_window_days": window},
        "work_dir": str(tmp_path / "work"),
    }
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_import_starts_nothing_and_loading_without_config_says_what_to_do(tmp_path):
    """The import alone reads no config, writes no demo estate and starts no server."""
    code = (
        "import os, psutil, backup_pipelines.definitions as m; "
        "print(len(psutil.Process().children(recursive=True)), sorted(os.listdir('.')))"
    )
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["0", "[]"]

    old = os.environ.pop(CONFIG_ENV, None)
    try:
        with pytest.raises(ConfigNotSet) as err:
            defs()
    finally:
        if old is not None:
            os.environ[CONFIG_ENV] = old
    assert CONFIG_ENV in str(err.value) and "./dev dagster" in str(err.value)


def test_definitions_load_without_beta_preview_or_deprecation_warnings(tmp_path, dagster_instance):
    path = _config(tmp_path, {"db1": "mariabackup", "db2": "mariabackup"})
    with warnings.catch_warnings():
        for category in (BetaWarning, PreviewWarning, DeprecationWarning):
            warnings.simplefilter("error", category)
        loaded = build_definitions(path)
        repo = loaded.get_repository_def()
        repo.get_all_jobs()
        repo.asset_graph.get(VERIFICATION)
        # The sensors that request restore points do it without Dagster's deprecated dimension tags.
        dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db1"))
        for name in ("restore_window", "verify_after_base"):
            sensor = repo.get_sensor_def(name)
            result = sensor.evaluate_tick(build_sensor_context(instance=dagster_instance, repository_def=repo))
            assert not any("dagster/partition/" in k for r in result.run_requests for k in r.tags)


def test_kinds_follow_each_hosts_engine(tmp_path):
    def kinds(engines: dict[str, str]) -> dict[str, set[str]]:
        sub = tmp_path / "-".join(engines.values())
        sub.mkdir()
        graph = build_definitions(_config(sub, engines)).get_repository_def().asset_graph
        return {"/".join(k.path): graph.get(k).kinds for k in (BASE, INCREMENTAL, VERIFICATION, STAGING, DUMP)}

    maria = kinds({"db1": "mariabackup"})
    assert maria["mysql/base_backup"] == maria["mysql/incremental_backup"] == {"mariabackup", "mariadb"}
    assert maria["mysql/restore_verification"] == maria["mysql/staging_restore"] == {"mariadb"}
    assert maria["mysql/logical_dump"] == {"mariadb", "sql"}
    percona = kinds({"db1": "xtrabackup"})
    assert percona["mysql/base_backup"] == {"xtrabackup", "mysql"} and percona["mysql/staging_restore"] == {"mysql"}
    mixed = kinds({"db1": "mariabackup", "db2": "innobackupex"})
    assert mixed["mysql/base_backup"] == {"mariabackup", "xtrabackup", "mariadb", "mysql"}


LOAD_AND_LIST = """
import json, sys
from dagster import DagsterInstance
from dagster._core.definitions.partitions.context import partition_loading_context
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.keys import VERIFICATION
from dagster._serdes import serialize_value
from dagster._core.definitions.partitions.snap.snap import PartitionsSnap
node = build_definitions(sys.argv[1]).get_repository_def().asset_graph.get(VERIFICATION)
instance = DagsterInstance.get()
with partition_loading_context(dynamic_partitions_store=instance):
    keys = node.partitions_def.get_partition_keys()
snap = serialize_value(PartitionsSnap.from_def(node.partitions_def))
print(json.dumps({"snap": snap, "keys": keys}))
"""


def test_processes_started_days_apart_agree_on_the_restore_window(tmp_path, dagster_instance):
    """A daemon started on the 1st and a run worker started on the 2nd see the same partitions."""
    path = _config(tmp_path, {"db1": "mariabackup", "db2": "mariabackup"}, window=3)
    # The restore_window sensor keeps the set; its tick on Dec 1st opens Nov 29 .. Dec 1.
    add, delete = window_changes(_cfg(path), [], date(2026, 12, 1))
    assert (add, delete) == (["2026-11-29", "2026-11-30", "2026-12-01"], [])
    dagster_instance.add_dynamic_partitions(RESTORE_DAYS, add)
    env = {**os.environ, "DAGSTER_HOME": dagster_instance.root_directory, "PYTHONPATH": str(ROOT)}
    seen = []
    for when in ("2026-12-01 23:59:00", "2026-12-02 00:01:00", "2026-12-04 12:00:00"):
        res = subprocess.run(
            ["faketime", when, sys.executable, "-c", LOAD_AND_LIST, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        seen.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert seen[0] == seen[1] == seen[2]
    assert seen[0]["keys"] == [f"{d}|{h}" for d in add for h in ("db1", "db2")]
    # The next day's tick moves the window for everyone at once: one day in, one day out.
    assert window_changes(_cfg(path), add, date(2026, 12, 2)) == (["2026-12-02"], ["2026-11-29"])


def _cfg(path: Path):
    from backup_pipelines.core.config import load_config

    return load_config(path)


def test_the_restore_window_sensor_adds_today_and_drops_what_fell_out(tmp_path, dagster_instance):
    path = _config(tmp_path, {"db1": "mariabackup"}, window=2)
    repo = build_definitions(path).get_repository_def()
    sensor = repo.get_sensor_def("restore_window")
    dagster_instance.add_dynamic_partitions(RESTORE_DAYS, ["2020-01-01"])
    (req_add, req_delete) = sensor.evaluate_tick(
        build_sensor_context(instance=dagster_instance, repository_def=repo)
    ).dynamic_partitions_requests
    today = date.today()
    assert req_add.partition_keys[-1] == today.isoformat() and len(req_add.partition_keys) == 2
    assert req_delete.partition_keys == ["2020-01-01"]


@pytest.mark.parametrize(
    "key", ["db1", "2026-12-02", "2026-12-02|db9", "db1|2026-12-02", "2026-13-02|db1", "2026-12-02|db1|x"]
)
def test_a_plain_partition_key_that_is_not_a_restore_point_is_refused_clearly(tmp_path, key):
    from dagster import Failure

    cfg = _cfg(_config(tmp_path, {"db1": "mariabackup"}))
    with pytest.raises(Failure) as err:
        parse_restore_point(cfg, key)
    assert f"partition key {key!r} is not a restore point" in err.value.description
    assert "'<day>|<host>'" in err.value.description and "db1" in err.value.description


def test_a_plain_partition_key_names_its_restore_point(tmp_path):
    cfg = _cfg(_config(tmp_path, {"db1": "mariabackup"}))
    assert parse_restore_point(cfg, "2026-12-02|db1") == ("db1", "2026-12-02")


def test_a_run_launched_with_a_bare_host_as_its_partition_fails_clearly(tmp_path, dagster_instance):
    """Only the plain `dagster/partition` tag, and the wrong shape: a message, not an AssertionError."""
    from tests.fixtures.dagster import failure_message

    loaded = build_definitions(_config(tmp_path, {"db1": "mariabackup"}))
    for job in ("restore_verification", "staging_restore"):
        res = loaded.resolve_job_def(job).execute_in_process(
            instance=dagster_instance, tags={"dagster/partition": "db1"}, raise_on_error=False
        )
        assert not res.success
        msg = failure_message(res)
        assert "partition key 'db1' is not a restore point" in msg and "'<day>|<host>'" in msg, msg
