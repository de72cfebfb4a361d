"""Partitioning: hosts for backups, host x day for restore points.

Backups are partitioned by host only. They have no time dimension on purpose: a
backup can only capture *now*, so there is no past partition to launch by mistake.

Restore points (verification, staging restores) read history, so they are host x day
and backfillable. The day dimension is a rolling window (`restore_window_days`) because
restores can only reach what retention keeps; the partition count is therefore bounded
by fleet size x window, not by how long the system has run: 200 hosts x 60 days =
12,000 partitions per asset, the same in year three as in week one.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from ..core.config import Config

HOST_DIM = "host"
DAY_DIM = "day"


def host_partitions(cfg: Config) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(sorted(cfg.hosts))


def window_start(cfg: Config, today: date | None = None) -> date:
    today = today or datetime.now(ZoneInfo(fleet_timezone(cfg))).date()
    return today - timedelta(days=cfg.orchestration.restore_window_days - 1)


def fleet_timezone(cfg: Config) -> str:
    zones = {h.schedules.timezone for h in cfg.hosts.values()}
    return zones.pop() if len(zones) == 1 else "UTC"


def restore_point_partitions(cfg: Config, today: date | None = None) -> MultiPartitionsDefinition:
    tz = fleet_timezone(cfg)
    start = window_start(cfg, today)
    return MultiPartitionsDefinition(
        {
            HOST_DIM: host_partitions(cfg),
            # end_offset=1 includes today: "verify the newest backup" is today's partition.
            DAY_DIM: DailyPartitionsDefinition(start_date=start.isoformat(), timezone=tz, end_offset=1),
        }
    )


def restore_point_key(host: str, day: date | str) -> MultiPartitionKey:
    return MultiPartitionKey({HOST_DIM: host, DAY_DIM: str(day)})


def point_in_time(cfg: Config, day: str, now: datetime | None = None) -> datetime | None:
    """The end of `day` in the fleet's time zone, or None (= newest) when that is still ahead."""
    tz = ZoneInfo(fleet_timezone(cfg))
    end = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(0), tz) - timedelta(microseconds=1)
    now = now or datetime.now(tz)
    return None if end >= now else end
