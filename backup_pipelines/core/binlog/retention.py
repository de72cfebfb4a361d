"""Binlog retention: keep every file needed to reach any second after the oldest retained backup.

Pure: given the backups that stay and the archived file instances, the instances that come
before the point the oldest kept backup replays from are no longer needed by anyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..catalog import BackupManifest
from .continuity import start_instance
from .index import FileInstance, order_key


@dataclass
class BinlogPlan:
    keep: list[FileInstance] = field(default_factory=list)
    delete: list[FileInstance] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "keep": [i.name for i in self.keep],
            "delete": [i.name for i in self.delete],
            "delete_bytes": sum(s.size for i in self.delete for s in i.segments),
        }


def plan_binlogs(kept: Iterable[BackupManifest], instances: list[FileInstance]) -> BinlogPlan:
    kept = list(kept)
    if not kept:  # nothing to replay from: keep the binlogs (a new full backup will use them)
        return BinlogPlan(keep=list(instances))
    cuts = []
    for b in kept:
        start = start_instance(instances, b)
        if start is not None:
            cuts.append(order_key(start))
        else:  # its file is not archived: nothing older than the backup can serve it
            cuts.append((int(b.started_at.timestamp()) - 1, -1, ""))
    cut = min(cuts)
    plan = BinlogPlan()
    for inst in instances:
        (plan.keep if order_key(inst) >= cut else plan.delete).append(inst)
    return plan
