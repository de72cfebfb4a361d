"""`check` for binlogs: every segment's object present at its recorded size, and continuity proven
from every retained backup to the latest restorable time (no missing bytes, no missing file)."""

from __future__ import annotations

from typing import Any

from ..catalog import PHYSICAL, Catalog
from .continuity import iso, walk
from .index import BinlogIndex, FileInstance


def continuity(catalog: Catalog, instances: list[FileInstance], host: str) -> tuple[list[str], int | None]:
    """Gaps on the way from every retained backup to now, and the latest restorable second."""
    backups = [b for b in catalog.list_backups(host, kinds=PHYSICAL) if b.binlog is not None]
    gaps: list[str] = []
    latest: int | None = None
    for b in backups:
        w = walk(instances, b)
        if w.gap and w.gap not in gaps:
            gaps.append(w.gap)
        if w.latest is not None and (latest is None or w.latest > latest):
            latest = w.latest
    return gaps, latest


def check_binlogs(catalog: Catalog, host: str) -> dict[str, Any]:
    index = BinlogIndex(catalog)
    instances = index.instances(host)
    problems: list[str] = []
    for inst in instances:
        for seg in inst.segments:
            info = catalog.repo.stat(seg.key)
            if info is None:
                problems.append(f"binlog {inst.file} [{seg.start}, {seg.end}): object {seg.key} is missing")
            elif info.size != seg.size:
                problems.append(
                    f"binlog {inst.file} [{seg.start}, {seg.end}): object {seg.key} is {info.size} bytes, "
                    f"its record says {seg.size}"
                )
    gaps, latest = continuity(catalog, instances, host) if instances else ([], None)
    return {
        "files": len(instances),
        "segments": sum(len(i.segments) for i in instances),
        "latest_restorable": iso(latest) if latest is not None else None,
        "gaps": gaps,
        "problems": problems + [f"binlog gap: {g}" for g in gaps],
    }
