"""The asset graph materialized through a real DagsterInstance against real MariaDB, sshd and S3."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
from dagster import build_sensor_context

from backup_pipelines.core.session import Session
from backup_pipelines.core.verify import table_fingerprints
from backup_pipelines.definitions import build_definitions
from backup_pipelines.defs.keys import AS_OF_TAG, BASE, INCREMENTAL
from backup_pipelines.defs.partitions import restore_point_key
from tests.fixtures.dagster import check_results, failure_message, materialization_metadata, open_restore_window
from tests.fixtures.mariadb import load_shop, write_secret

pytestmark = [pytest.mark.dagster, pytest.mark.integration]


@pytest.fixture
def fleet(source, make_config, staging_server, sshd, s3_server, s3_bucket, tmp_path):
    """db1 reached over SSH, backing up into S3; a staging target; verification local."""
    ssh = {
        "kind": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "user": sshd.user,
        "key_file": str(sshd.client_key),
        "known_hosts_file": str(sshd.known_hosts),
        "remote_command": f"{sys.executable} -m backup_pipelines.cli",
        "remote_config": str(tmp_path / "config.yaml"),
    }
    import os

    # The SSH session does not inherit this process's environment: give it the AWS chain's file.
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "credentials").write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(aws / "credentials")
    ssh["remote_command"] = f"env AWS_SHARED_CREDENTIALS_FILE={aws / 'credentials'} {ssh['remote_command']}"
    offsite_bucket = f"offsite-{s3_bucket[-12:]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1").create_bucket(
        Bucket=offsite_bucket
    )
    offsite = {
        "target_url": f"boto3+s3://{offsite_bucket}/copy",
        "s3_endpoint_url": s3_server.endpoint_url,
        "s3_region": "us-east-1",
        "passphrase_file": str(write_secret(tmp_path / "secrets" / "offsite", "pp")),
        "gnupg_home": str(tmp_path / "gnupg"),
        "archive_dir": str(tmp_path / "dupcache"),
        "mirror_dir": str(tmp_path / "mirror"),
        "volsize_mb": 5,
        "num_retries": 2,
    }
    (tmp_path / "gnupg").mkdir(mode=0o700)
    cfg = make_config(
        f"s3://{s3_bucket}/fleet",
        s3_endpoint=s3_server.endpoint_url,
        host_overrides={"transport": ssh},
        extra={"staging": {"staging1": {**staging_server.config_entry(), "source_host": "db1"}}, "offsite": offsite},
    )
    load_shop(source)
    return tmp_path / "config.yaml", cfg


def test_backups_verification_and_staging_through_the_graph(fleet, dagster_instance, source, staging_server):
    config_path, cfg = fleet
    defs = build_definitions(config_path)
    job = defs.resolve_job_def("physical_backups")

    base = job.execute_in_process(instance=dagster_instance, partition_key="db1", asset_selection=[BASE])
    assert base.success
    meta = materialization_metadata(base)
    assert meta["kind"] == "full" and meta["stored_bytes"] > 0 and meta["source_bytes"] > meta["stored_bytes"]
    assert meta["repository"].startswith("s3://") and meta["from_lsn"] == 0 and meta["to_lsn"] > 0
    assert meta["redo_end_lsn"] >= meta["to_lsn"]
    assert ":" in meta["binlog_position"] and meta["throughput_mib_s"] > 0
    assert check_results(base) == {"catalog_integrity": True, "base_freshness": True}

    fingerprints = []
    for n in range(2):
        source.sql(
            "INSERT INTO shop.orders (account, amount, note) SELECT 1, %s, 'graph' FROM seq_1_to_500",
            (n,),
            database="shop",
        )
        inc = job.execute_in_process(instance=dagster_instance, partition_key="db1", asset_selection=[INCREMENTAL])
        assert inc.success
        m = materialization_metadata(inc)
        assert m["kind"] == "incremental" and m["parent_id"] != "-"
        assert m["redo_end_lsn"] > meta["redo_end_lsn"]  # the writes above moved the redo log
        assert check_results(inc) == {"chain_restorable": True, "rpo_freshness": True}
        fingerprints.append(source.fingerprint())

    # The catalog, read independently of Dagster, holds exactly what the graph reported.
    listed = Session.open(cfg).catalog.list_backups("db1")
    assert [b.kind for b in listed] == ["full", "incremental", "incremental"]
    assert listed[-1].id == m["backup_id"] and listed[-1].parent_id == listed[-2].id

    today = date.today().isoformat()
    open_restore_window(dagster_instance, today)
    verify = defs.resolve_job_def("restore_verification").execute_in_process(
        instance=dagster_instance, partition_key=restore_point_key("db1", today)
    )
    assert verify.success
    vmeta = materialization_metadata(verify)
    assert vmeta["passed"] is True and vmeta["backup_id"] == listed[-1].id and vmeta["chain_length"] == 3
    assert check_results(verify) == {"verification_passed": True}

    # Launched with only the plain partition tag, as a run from the API or an old client may be.
    staging = defs.resolve_job_def("staging_restore").execute_in_process(
        instance=dagster_instance, tags={"dagster/partition": f"{today}|db1"}
    )
    assert staging.success
    smeta = materialization_metadata(staging)
    assert smeta["staging_target"] == "staging1" and smeta["backup_id"] == listed[-1].id
    with staging_server.server().connect() as conn:
        assert table_fingerprints(conn, include_mysql=False) == fingerprints[-1]

    # A passing verification requests retention for the host; retention keeps the verified chain.
    prune_sensor = next(s for s in defs.sensors if s.name == "prune_after_verification")
    (req,) = prune_sensor.evaluate_tick(build_sensor_context(instance=dagster_instance, definitions=defs)).run_requests
    assert req.partition_key == "db1"
    pruned = defs.resolve_job_def("retention").execute_in_process(instance=dagster_instance, partition_key="db1")
    rmeta = materialization_metadata(pruned)
    assert rmeta["deleted_count"] == 0 and rmeta["kept_physical"] == 3
    assert [b.id for b in Session.open(cfg).catalog.list_backups("db1")] == [b.id for b in listed]

    # The nightly logical dump, through the same worker.
    source.sql("GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO 'backup'@'localhost'")
    dump = defs.resolve_job_def("logical_dumps").execute_in_process(instance=dagster_instance, partition_key="db1")
    dmeta = materialization_metadata(dump)
    assert dmeta["engine"] == "mysqldump" and dmeta["databases"] == ["inventory", "shop"] and dmeta["objects"] == 4
    assert [b.kind for b in Session.open(cfg).catalog.list_backups("db1")][-1] == "dump"


def test_a_past_day_with_no_backup_fails_clearly(fleet, dagster_instance):
    config_path, _ = fleet
    defs = build_definitions(config_path)
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    open_restore_window(dagster_instance, yesterday)
    res = defs.resolve_job_def("restore_verification").execute_in_process(
        instance=dagster_instance, partition_key=restore_point_key("db1", yesterday), raise_on_error=False
    )
    assert not res.success
    msg = failure_message(res)
    assert "no completed backup finished at or before" in msg and "db1" in msg


def test_past_dated_backup_is_refused(fleet, dagster_instance):
    config_path, cfg = fleet
    defs = build_definitions(config_path)
    job = defs.resolve_job_def("physical_backups")
    stale = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    res = job.execute_in_process(
        instance=dagster_instance,
        partition_key="db1",
        asset_selection=[BASE],
        tags={AS_OF_TAG: stale},
        raise_on_error=False,
    )
    assert not res.success
    msg = failure_message(res)
    assert "refusing to take a backup for" in msg and "backups capture the database as it is now" in msg
    assert Session.open(cfg).catalog.list_backups("db1") == []  # nothing was taken
    fresh = datetime.now(UTC).isoformat()
    ok = job.execute_in_process(
        instance=dagster_instance, partition_key="db1", asset_selection=[BASE], tags={AS_OF_TAG: fresh}
    )
    assert ok.success


def test_offsite_copy_of_an_s3_repository(fleet, dagster_instance):
    config_path, cfg = fleet
    defs = build_definitions(config_path)
    assert (
        defs.resolve_job_def("physical_backups")
        .execute_in_process(instance=dagster_instance, partition_key="db1", asset_selection=[BASE])
        .success
    )
    res = defs.resolve_job_def("offsite_copy").execute_in_process(instance=dagster_instance)
    meta = materialization_metadata(res)
    assert meta["verify_passed"] is True and meta["set_type"] == "full" and meta["sets"] == 1
    assert meta["target"].startswith("boto3+s3://offsite-") and meta["source_mib"] > 0
    assert check_results(res) == {"offsite_verified": True}
    # the mirror of the S3 primary holds exactly the committed objects
    listed = Session.open(cfg).catalog.list_backups("db1")
    mirror = cfg.offsite.mirror_dir / "hosts" / "db1" / "backups" / listed[0].id
    assert sorted(p.name for p in mirror.iterdir()) == ["data.xbstream.zst", "manifest.json"]
