"""Partitioning: hosts for backups, host x day for restore points.

Backups are partitioned by host only. They have no time dimension on purpose: a
backup can only capture *now*, so there is no past partition to launch by mistake.

Restore points (verification, staging restores) read history, so they are host x day
and backfillable. The day dimension is the dynamic partition set `restore_days`, kept
by the `restore_window` sensor to the last `restore_window_days` days: restores can only
reach what retention keeps, so the count is bounded by fleet size x window (200 hosts x
60 days = 12,000 partitions per asset, the same in year three as in week one).

Why dynamic rather than a daily window computed from the clock: the set lives in the
instance, so the webserver, the daemon and every run worker see the same days whenever
they were started. A window computed at import time would differ between a daemon
started yesterday and a run worker started today.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    DynamicPartitionsDefinition,
    Failure,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from ..core.config import Config

HOST_DIM = "host"
DAY_DIM = "day"
RESTORE_DAYS = "restore_days"  # the dynamic partition set of the day dimension


def host_partitions(cfg: Config) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(sorted(cfg.hosts))


def restore_days() -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=RESTORE_DAYS)


def fleet_timezone(cfg: Config) -> str:
    zones = {h.schedules.timezone for h in cfg.hosts.values()}
    return zones.pop() if len(zones) == 1 else "UTC"


def fleet_today(cfg: Config, now: datetime | None = None) -> date:
    tz = ZoneInfo(fleet_timezone(cfg))
    return (now.astimezone(tz) if now else datetime.now(tz)).date()


def window_days(cfg: Config, today: date) -> list[str]:
    """The days the restore window holds on `today`, oldest first (today included)."""
    n = cfg.orchestration.restore_window_days
    return [(today - timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


def window_changes(cfg: Config, existing: Iterable[str], today: date) -> tuple[list[str], list[str]]:
    """(days to add, days to delete) to make `existing` the window of `today`."""
    want = window_days(cfg, today)
    have = set(existing)
    return [d for d in want if d not in have], sorted(have - set(want))


def restore_point_partitions(cfg: Config) -> MultiPartitionsDefinition:
    return MultiPartitionsDefinition({HOST_DIM: host_partitions(cfg), DAY_DIM: restore_days()})


def restore_point_key(host: str, day: date | str) -> MultiPartitionKey:
    return MultiPartitionKey({HOST_DIM: host, DAY_DIM: str(day)})


def parse_restore_point(cfg: Config, key: str) -> tuple[str, str]:
    """(host, day) from a restore-point partition key, however the run was launched.

    The UI and the Python API give a MultiPartitionKey; a run launched with only the plain
    `dagster/partition` tag gives its string, `<day>|<host>` (dimensions in name order).
    """
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims[HOST_DIM], dims[DAY_DIM]
    parts = str(key).split("|")
    day, host = parts if len(parts) == 2 else ("", "")
    try:
        date.fromisoformat(day)
        valid_day = True
    except ValueError:
        valid_day = False
    if len(parts) != 2 or host not in cfg.hosts or not valid_day:
        example = f"{date.today().isoformat()}|{sorted(cfg.hosts)[0] if cfg.hosts else 'db1'}"
        raise Failure(
            description=f"partition key {key!r} is not a restore point: restore points are keyed "
            f"'<day>|<host>' (day YYYY-MM-DD, host one of {', '.join(sorted(cfg.hosts))}), e.g. "
            f"dagster/partition={example}; or pick the host and the day in the UI's Materialize dialog",
            allow_retries=False,
        )
    return host, day


def point_in_time(cfg: Config, day: str, now: datetime | None = None) -> datetime | None:
    """The end of `day` in the fleet's time zone, or None (= newest) when that is still ahead."""
    tz = ZoneInfo(fleet_timezone(cfg))
    end = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(0), tz) - timedelta(microseconds=1)
    now = now or datetime.now(tz)
    return None if end >= now else end
