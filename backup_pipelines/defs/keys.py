"""Asset keys and tag names shared across the code location."""

from __future__ import annotations

from dagster import AssetKey

BASE = AssetKey(["mysql", "base_backup"])
INCREMENTAL = AssetKey(["mysql", "incremental_backup"])
VERIFICATION = AssetKey(["mysql", "restore_verification"])
STAGING = AssetKey(["mysql", "staging_restore"])
DUMP = AssetKey(["mysql", "logical_dump"])
OFFSITE = AssetKey(["mysql", "offsite_copy"])
RETENTION = AssetKey(["mysql", "retention"])

AS_OF_TAG = "backup-pipelines/as-of"  # when a backup run was meant to happen (set by schedules)
SCHEDULED_TAG = "dagster/scheduled_execution_time"
HOST_TAG = "backup-pipelines/host"
POOL = "mysql_backups"  # fleet-wide cap on concurrent backup tools (limit set in dagster.yaml)
