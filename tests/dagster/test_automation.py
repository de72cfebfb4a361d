"""Schedules and sensors evaluated with Dagster's test contexts at chosen times, on a real instance."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetMaterialization,
    DagsterRunStatus,
    asset,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    materialize,
)
from dagster._core.storage.event_log.base import PartitionKeyFilter

from backup_pipelines.core.config import load_config
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.batch import BATCH_JOB, BATCH_TAG
from backup_pipelines.defs.checks import BASE_AGE_CHECK, RPO_CHECK
from backup_pipelines.defs.keys import AS_OF_TAG, BASE, HOST_TAG, INCREMENTAL
from backup_pipelines.defs.partitions import host_partitions
from backup_pipelines.defs.sensors import evaluate_freshness, record_freshness

pytestmark = pytest.mark.dagster

SECRET = "hunter2-never-in-payloads"


@pytest.fixture
def fleet_config(tmp_path: Path) -> Path:
    """Three hosts, two intervals, two time zones; no servers needed to evaluate automation."""
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    pw.chmod(0o600)
    hook = tmp_path / "hook"
    hook.write_text("http://127.0.0.1:1/unused")
    hook.chmod(0o600)
    host = {"datadir": "/var/lib/mysql", "socket": str(tmp_path / "none.sock"), "password_file": str(pw)}
    doc = {
        "repository": {"url": f"file://{tmp_path / 'repo'}"},
        "hosts": {
            "db1": {**host},
            "db2": {**host, "schedules": {"incremental_minutes": 5}},
            "db3": {**host, "schedules": {"timezone": "Europe/London", "base_cron": "30 2 * * *"}},
        },
        "work_dir": str(tmp_path / "work"),
    }
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _schedule(defs, name):
    return next(s for s in defs.schedules if s.name == name)


def _per_host(config: Path) -> Path:
    doc = yaml.safe_load(config.read_text())
    doc["orchestration"] = {"schedule_runs": "per_host"}
    config.write_text(yaml.safe_dump(doc))
    return config


def _planned(req) -> list[tuple[str, str]]:
    return [(b["host"], b["kind"]) for b in req.run_config["ops"]["plan_batch"]["config"]["backups"]]


def test_schedules_group_hosts_by_timing_and_zone(fleet_config, dagster_instance):
    defs = build_definitions(fleet_config)
    names = sorted(s.name for s in defs.schedules)
    assert names == [
        "base_backups_0_1_utc",
        "base_backups_30_2_europe_london",
        "incremental_backups_every_15m_europe_london",
        "incremental_backups_every_15m_utc",
        "incremental_backups_every_5m_utc",
        "logical_dumps_30_2_europe_london",
        "logical_dumps_30_2_utc",
    ]
    for s in defs.schedules:
        assert s.execution_timezone in ("UTC", "Europe/London")
    base = _schedule(defs, "base_backups_0_1_utc")
    assert base.cron_schedule == "0 1 * * *" and base.job_name == BATCH_JOB
    tick = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    reqs = base.evaluate_tick(
        build_schedule_context(
            instance=dagster_instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
    )
    # one run for the tick, a base of each of its hosts
    (req,) = reqs.run_requests
    assert _planned(req) == [("db1", "full"), ("db2", "full")]
    assert req.tags[AS_OF_TAG] == tick.isoformat() and req.tags[BATCH_TAG] == "base/base_backups_0_1_utc"
    assert req.run_config["execution"]["config"]["max_concurrent"] == 8
    assert _schedule(defs, "incremental_backups_every_5m_utc").cron_schedule == "*/5 * * * *"


def test_per_host_schedules_launch_a_run_per_host(fleet_config, dagster_instance):
    defs = build_definitions(_per_host(fleet_config))
    base = _schedule(defs, "base_backups_0_1_utc")
    assert base.job_name == "physical_backups"
    tick = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    reqs = base.evaluate_tick(
        build_schedule_context(
            instance=dagster_instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
    )
    assert [(r.partition_key, r.asset_selection, r.tags[AS_OF_TAG]) for r in reqs.run_requests] == [
        ("db1", [BASE], tick.isoformat()),
        ("db2", [BASE], tick.isoformat()),
    ]
    sched = _schedule(defs, "incremental_backups_every_15m_utc")
    ctx = build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert req.partition_key == "db1" and req.asset_selection == [BASE] and req.tags[HOST_TAG] == "db1"
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db1"))
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert req.asset_selection == [INCREMENTAL] and req.run_key == f"incr|db1|{tick.isoformat()}"


def test_incremental_schedule_bootstraps_hosts_without_a_base(fleet_config, dagster_instance):
    defs = build_definitions(fleet_config)
    sched = _schedule(defs, "incremental_backups_every_5m_utc")
    tick = datetime(2026, 11, 29, 9, 15, tzinfo=UTC)
    ctx = build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert _planned(req) == [("db2", "full")]
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db2"))
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert _planned(req) == [("db2", "incremental")]
    assert req.run_key == f"incr-batch|incremental_backups_every_5m_utc|{tick.isoformat()}|0"


def test_incremental_schedule_leaves_a_busy_host_to_the_next_tick(fleet_config, dagster_instance):
    """A batch still running a host's backup keeps that host out of the next tick; once its
    step has materialized (the run may still be busy with other hosts), it is due again."""
    doc = yaml.safe_load(fleet_config.read_text())
    doc["hosts"]["db1"]["schedules"] = {"incremental_minutes": 5}
    fleet_config.write_text(yaml.safe_dump(doc))
    defs = build_definitions(fleet_config)
    sched = _schedule(defs, "incremental_backups_every_5m_utc")
    tick = datetime(2026, 11, 29, 9, 15, tzinfo=UTC)
    ctx = build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert _planned(req) == [("db1", "full"), ("db2", "full")]
    running = dagster_instance.create_run_for_job(
        defs.resolve_job_def(BATCH_JOB), run_config=req.run_config, status=DagsterRunStatus.STARTED
    )
    result = sched.evaluate_tick(ctx)
    assert result.run_requests == [] and "db1, db2" in (result.skip_message or "")
    # db1's step finished in that run: db1 is due again, db2 still busy
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db1"))
    _materialized_in(dagster_instance, running.run_id, "db1")
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert _planned(req) == [("db1", "incremental")]
    dagster_instance.report_run_failed(running)
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert _planned(req) == [("db1", "incremental"), ("db2", "full")]


def _materialized_in(instance, run_id: str, host: str) -> None:
    """Store a base materialization of `host` as the batch run `run_id` would."""
    from dagster import DagsterEvent, DagsterEventType
    from dagster._core.events import StepMaterializationData

    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=BATCH_JOB,
        event_specific_data=StepMaterializationData(AssetMaterialization(asset_key=BASE, partition=host)),
    )
    instance.report_dagster_event(event, run_id=run_id)


def test_verification_follows_each_new_base(fleet_config, dagster_instance):
    defs = build_definitions(fleet_config)
    sensor = next(s for s in defs.sensors if s.name == "verify_after_base")
    ctx = build_sensor_context(instance=dagster_instance, definitions=defs)
    assert sensor.evaluate_tick(ctx).skip_message == "no new base backups"
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db3"))
    result = sensor.evaluate_tick(ctx)
    (req,) = result.run_requests
    # The fleet spans two zones, so its days are UTC days; the plain partition tag names the point.
    today = datetime.now(UTC).date().isoformat()
    assert req.tags["dagster/partition"] == f"{today}|db3" and req.tags[HOST_TAG] == "db3"
    assert not any(k.startswith("dagster/partition/") for k in req.tags)
    # The day is added to restore_days if the restore_window sensor has not done so yet.
    (add,) = result.dynamic_partitions_requests
    assert add.partitions_def_name == "restore_days" and add.partition_keys == [today]
    again = sensor.evaluate_tick(
        build_sensor_context(instance=dagster_instance, definitions=defs, cursor=result.cursor)
    )
    assert again.skip_message == "no new base backups"


def test_rpo_monitor_turns_red_per_host(fleet_config, dagster_instance):
    defs = build_definitions(fleet_config)
    cfg = load_config(fleet_config)
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db1"))
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=INCREMENTAL, partition="db1"))
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=INCREMENTAL, partition="db2"))
    ctx = build_sensor_context(instance=dagster_instance, definitions=defs)
    now = datetime.now(UTC) + timedelta(minutes=12)  # db2's limit is 10 minutes, db1's 30
    results, state = evaluate_freshness(ctx, cfg, now=now)
    events = [e for e, _ in results]
    rpo = {e.partition: e.passed for e in events if e.check_name == RPO_CHECK}
    assert rpo == {"db1": True, "db2": False, "db3": False}
    base = {e.partition: e.passed for e in events if e.check_name == BASE_AGE_CHECK}
    assert base == {"db1": True, "db2": False, "db3": False}
    db2 = next(e for e in events if e.partition == "db2" and e.check_name == RPO_CHECK)
    assert db2.metadata["limit_minutes"].value == 10 and db2.metadata["age_minutes"].value >= 12
    # unchanged results are not re-emitted every minute...
    ctx2 = build_sensor_context(instance=dagster_instance, definitions=defs, cursor=json.dumps(state))
    assert evaluate_freshness(ctx2, cfg, now=now + timedelta(minutes=1))[0] == []
    # ...but a change is (db1 crosses its 30-minute RPO)
    later, _ = evaluate_freshness(ctx2, cfg, now=now + timedelta(minutes=20))
    assert [(e.partition, e.check_name, e.passed) for e, _ in later] == [("db1", RPO_CHECK, False)]


def _stand_in(key, cfg):
    """An asset with a backup asset's key whose real runs leave real materializations (no server)."""

    @asset(key=key, partitions_def=host_partitions(cfg))
    def stand_in() -> None:
        return None

    return stand_in


def _history(instance, key, check, host) -> list[tuple[bool, str]]:
    """(passed, run id) of each stored result of the check for the host, oldest first."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(key, check), limit=100, partition_filter=PartitionKeyFilter(key=host)
    )
    out = []
    for r in reversed(records):
        evaluation = r.event.dagster_event.event_specific_data
        out.append((evaluation.passed, r.run_id))
    return out


def test_rpo_monitor_stores_every_status_change(fleet_config, dagster_instance):
    """Each status change of a host's freshness is stored: the sensor's tick never collides."""
    cfg = load_config(fleet_config)
    defs = build_definitions(fleet_config)
    base, incr = _stand_in(BASE, cfg), _stand_in(INCREMENTAL, cfg)
    first = {h: materialize([base, incr], partition_key=h, instance=dagster_instance).run_id for h in ("db1", "db2")}
    start = datetime.now(UTC)
    cursor = None
    for minutes in (0, 12, 40, 100):  # db2 breaches at 10, db1 at 30; +100 is a restatement
        ctx = build_sensor_context(instance=dagster_instance, definitions=defs, cursor=cursor)
        results, state = evaluate_freshness(ctx, cfg, now=start + timedelta(minutes=minutes))
        assert record_freshness(dagster_instance, results) == len(
            [r for r in results if r[1] is not None or minutes == 0]
        )
        cursor = json.dumps(state)
        if minutes == 40:  # db2 is backed up again: green on the new run, the old run keeps its red
            again = materialize([incr], partition_key="db2", instance=dagster_instance).run_id
    ctx = build_sensor_context(instance=dagster_instance, definitions=defs, cursor=cursor)
    results, _ = evaluate_freshness(ctx, cfg, now=datetime.now(UTC))
    assert {(e.partition, e.passed) for e, _ in results if e.check_name == RPO_CHECK} == {
        ("db1", True),
        ("db2", True),
    }
    record_freshness(dagster_instance, results)
    db2 = _history(dagster_instance, INCREMENTAL, RPO_CHECK, "db2")
    assert db2[0] == (False, first["db2"])  # the run's own green, then the sensor's red, on one row
    assert db2[-1] == (True, again)
    db1 = _history(dagster_instance, INCREMENTAL, RPO_CHECK, "db1")
    assert db1[-1] == (True, first["db1"])  # red at +40, restated at +100, green now
    # db3 never had a backup: one runless red, kept (Dagster holds one runless row per partition)
    assert _history(dagster_instance, INCREMENTAL, RPO_CHECK, "db3") == [(False, "")]
    # the sensor itself stores through the instance and moves its cursor
    sensor = next(s for s in defs.sensors if s.name == "rpo_monitor")
    tick = sensor.evaluate_tick(build_sensor_context(instance=dagster_instance, definitions=defs))
    assert tick.cursor and not tick.asset_events


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append({"content_type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_failure_webhook_names_host_asset_run_and_error(fleet_config, dagster_instance, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "hook").write_text(f"http://127.0.0.1:{server.server_port}/hooks/slack")
    doc = yaml.safe_load(fleet_config.read_text())
    doc["notifications"] = {"webhook_url_file": str(tmp_path / "hook")}
    fleet_config.write_text(yaml.safe_dump(doc))
    defs = build_definitions(fleet_config)
    stale = (datetime.now(UTC) - timedelta(hours=5)).isoformat()
    res = defs.resolve_job_def("physical_backups").execute_in_process(
        instance=dagster_instance,
        partition_key="db2",
        asset_selection=[BASE],
        tags={AS_OF_TAG: stale},
        raise_on_error=False,
    )
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "PIPELINE_FAILURE")
    sensor = next(s for s in defs.sensors if s.name == "notify_on_failure")
    ctx = build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failure,
        dagster_instance=dagster_instance,
        dagster_run=res.dagster_run,
        repository_def=defs.get_repository_def(),
    )
    _Hook.received.clear()
    sensor(ctx.for_run_failure())
    server.shutdown()
    (post,) = _Hook.received
    payload = post["body"]
    assert post["content_type"] == "application/json"
    assert payload["host"] == "db2" and payload["run_id"] == res.run_id
    assert payload["assets"] == ["mysql/base_backup"]
    assert payload["error"].startswith("refusing to take a backup for")
    assert "db2" in payload["text"] and res.run_id in payload["text"]
    assert SECRET not in json.dumps(payload) and "hooks/slack" not in json.dumps(payload)
