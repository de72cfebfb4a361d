"""Catalog integrity without reading backup data: the cheap check run after every backup.

Proves that every completed backup has its objects, at the recorded sizes, with
checksums, and that every incremental's parent exists and its LSN range starts
where the parent's ended. Reading and hashing the data itself is verification's job.
"""

from __future__ import annotations

from typing import Any

from .catalog import PHYSICAL, BackupManifest, Catalog
from .errors import ChainError


def chains_of(backups: list[BackupManifest]) -> dict[str, list[BackupManifest]]:
    """Group physical backups by the full at their root (chain_id), oldest first."""
    chains: dict[str, list[BackupManifest]] = {}
    for m in sorted(backups, key=lambda b: (b.finished_at, b.id)):
        if m.kind in PHYSICAL:
            chains.setdefault(m.chain_id or m.id, []).append(m)
    return chains


def check_catalog(catalog: Catalog, host: str) -> dict[str, Any]:
    backups = catalog.list_backups(host)
    by_id = {m.id: m for m in backups}
    problems: list[str] = []
    for m in backups:
        problems.extend(catalog.check_objects(m))
        if m.kind == "full":
            if m.parent_id is not None:
                problems.append(f"{m.id}: a full backup with a parent ({m.parent_id})")
            continue
        if m.kind != "incremental":
            continue
        parent = by_id.get(m.parent_id or "")
        if parent is None:
            problems.append(f"{m.id}: parent {m.parent_id} is missing from the catalog")
        elif m.from_lsn != parent.to_lsn:
            problems.append(f"{m.id}: starts at LSN {m.from_lsn} but parent {parent.id} ends at {parent.to_lsn}")
        elif (m.to_lsn or 0) < (m.from_lsn or 0):
            problems.append(f"{m.id}: to_lsn {m.to_lsn} is before from_lsn {m.from_lsn}")
    from .binlog.check import check_binlogs

    binlogs = check_binlogs(catalog, host)
    problems.extend(binlogs.pop("problems"))
    chains = chains_of(backups)
    physical = [m for m in backups if m.kind in PHYSICAL]
    newest = physical[-1] if physical else None
    return {
        "host": host,
        "backups": len(backups),
        "chains": len(chains),
        "newest_id": newest.id if newest else None,
        "newest_kind": newest.kind if newest else None,
        "newest_finished_at": newest.finished_at.isoformat() if newest else None,
        "newest_chain": newest_chain(catalog, newest) if newest else None,
        "binlogs": binlogs,
        "problems": problems,
    }


def newest_chain(catalog: Catalog, newest: BackupManifest) -> dict[str, Any]:
    """Can the newest point be restored from what the catalog holds? (no data is read)"""
    try:
        chain = catalog.chain(newest.host, newest.id)
    except ChainError as err:
        return {"ids": [], "restorable": False, "problems": [err.message], "fetch_bytes": 0}
    problems = [p for m in chain for p in catalog.check_objects(m)]
    return {
        "ids": [m.id for m in chain],
        "restorable": not problems,
        "problems": problems,
        "fetch_bytes": sum(o.size for m in chain for o in m.objects),
    }
