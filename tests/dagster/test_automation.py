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
    AssetMaterialization,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
)

from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.checks import BASE_AGE_CHECK, RPO_CHECK
from backup_pipelines.defs.keys import AS_OF_TAG, BASE, HOST_TAG, INCREMENTAL
from backup_pipelines.defs.sensors import evaluate_freshness

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
    assert base.cron_schedule == "0 1 * * *"
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
    assert _schedule(defs, "incremental_backups_every_5m_utc").cron_schedule == "*/5 * * * *"


def test_incremental_schedule_bootstraps_hosts_without_a_base(fleet_config, dagster_instance):
    defs = build_definitions(fleet_config)
    sched = _schedule(defs, "incremental_backups_every_15m_utc")
    tick = datetime(2026, 11, 29, 9, 15, tzinfo=UTC)
    ctx = build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert req.partition_key == "db1" and req.asset_selection == [BASE] and req.tags[HOST_TAG] == "db1"
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db1"))
    (req,) = sched.evaluate_tick(ctx).run_requests
    assert req.asset_selection == [INCREMENTAL] and req.run_key == f"incr|db1|{tick.isoformat()}"


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
    cfg = __import__("backup_pipelines.core.config", fromlist=["x"]).load_config(fleet_config)
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=BASE, partition="db1"))
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=INCREMENTAL, partition="db1"))
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=INCREMENTAL, partition="db2"))
    ctx = build_sensor_context(instance=dagster_instance, definitions=defs)
    now = datetime.now(UTC) + timedelta(minutes=12)  # db2's limit is 10 minutes, db1's 30
    events, state = evaluate_freshness(ctx, cfg, now=now)
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
    assert [(e.partition, e.check_name, e.passed) for e in later] == [("db1", RPO_CHECK, False)]
    sensor = next(s for s in defs.sensors if s.name == "rpo_monitor")
    tick = sensor.evaluate_tick(build_sensor_context(instance=dagster_instance, definitions=defs))
    assert len(tick.asset_events) == 6 and tick.cursor


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
