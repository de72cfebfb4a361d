"""Continuity of the archived binlogs: from a backup's binlog position, how far can we replay?

The walk follows one file instance to the next by the rotate event that closed it (or the
next number after a stop event), insisting on every byte from the start position on. It
ends either at the open (newest) file, where the latest restorable time is what the
archiver has vouched for (`covers_until`), or at a gap: a file or byte range that was never
archived, which the result names with the times and GTIDs on either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..catalog import BackupManifest
from .index import FileInstance, file_number, order_key


@dataclass
class Part:
    """Replay bytes [start, end) of one file instance."""

    instance: FileInstance
    start: int
    end: int


@dataclass
class Walk:
    parts: list[Part] = field(default_factory=list)
    latest: int | None = None  # unix s: latest restorable second
    gap: str | None = None  # what is missing, where the walk stopped on a gap
    last_gtid: str | None = None

    @property
    def latest_dt(self) -> datetime | None:
        return datetime.fromtimestamp(self.latest, UTC) if self.latest is not None else None


def iso(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else "never"


def start_instance(instances: list[FileInstance], backup: BackupManifest) -> FileInstance | None:
    """The archived file a backup's binlog position points into: that name, opened before the backup ended."""
    if backup.binlog is None:
        return None
    finished = int(backup.finished_at.timestamp())
    named = [i for i in instances if i.file == backup.binlog.file and i.created <= finished]
    return named[-1] if named else None


def _next(instances: list[FileInstance], cur: FileInstance) -> tuple[str, FileInstance | None]:
    want = cur.next_file or _bump(cur.file)
    later = [i for i in instances if i.file == want and i.created >= cur.created]
    return want, (later[0] if later else None)


def _bump(name: str) -> str:
    stem, _, num = name.rpartition(".")
    return f"{stem}.{int(num) + 1:0{len(num)}d}" if num.isdigit() else name + ".next"


def walk(instances: list[FileInstance], backup: BackupManifest) -> Walk:
    """Everything replayable after `backup`, and where (and why) it stops."""
    w = Walk(latest=int(backup.finished_at.timestamp()), last_gtid=backup.binlog.gtid if backup.binlog else None)
    if backup.binlog is None:
        w.gap = f"backup {backup.id} recorded no binlog position (was log-bin on?)"
        return w
    cur = start_instance(instances, backup)
    pos = backup.binlog.position
    if cur is None:
        w.gap = (
            f"binlog {backup.binlog.file} (from position {pos}, where backup {backup.id} ends) is not archived: "
            f"transactions after GTID {backup.binlog.gtid or '?'} ({iso(w.latest)}) are missing"
        )
        return w
    while True:
        end = cur.contiguous_end
        if end < pos:
            w.gap = f"binlog {cur.file} is archived only up to byte {end}, replay needs it from {pos}"
            return w
        w.parts.append(Part(cur, pos, end))
        covered = cur.covered()
        gtids = [s.last_gtid for s in covered if s.last_gtid]
        if gtids:
            w.last_gtid = gtids[-1]
        if cur.last_time is not None:
            w.latest = max(w.latest or 0, cur.last_time)
        if cur.holes:
            a, b = cur.holes[0]
            w.gap = (
                f"binlog {cur.file} bytes [{a}, {b}) are not archived: transactions after GTID {w.last_gtid or '?'} "
                f"({iso(w.latest)}) are missing"
            )
            return w
        if not cur.closed:
            later = [i for i in instances if order_key(i) > order_key(cur)]
            if later:  # the server moved on to newer files: the rest of this one was never archived
                w.gap = (
                    f"binlog {cur.file} is archived only up to byte {end} and the rest was purged before it "
                    f"was archived: transactions after GTID {w.last_gtid or '?'} ({iso(w.latest)}) are missing; "
                    f"the archive resumes at {later[0].file}" + _resume(later[0]) + _missing(cur, later[0])
                )
                return w
            w.latest = max(w.latest or 0, cur.covers_until)
            return w
        want, nxt = _next(instances, cur)
        if nxt is None:
            later = [i for i in instances if i.created >= cur.created and file_number(i.file) > file_number(cur.file)]
            after = ""
            if later:
                after = f"; the archive resumes at {later[0].file}" + _resume(later[0]) + _missing(cur, later[0])
                w.gap = (
                    f"binlog {want} was purged before it was archived: transactions after GTID "
                    f"{w.last_gtid or '?'} ({iso(w.latest)}) are missing{after}"
                )
            elif cur.closed:
                # The newest archived file is closed and nothing follows yet: restorable up to what it vouches.
                w.latest = max(w.latest or 0, cur.covers_until)
                return w
            return w
        cur, pos = nxt, 4


def _resume(inst: FileInstance) -> str:
    first = next((s for s in inst.covered() if s.first_gtid), None)
    return f" (GTID {first.first_gtid} committed {iso(first.first_time)})" if first else ""


def _missing(cur: FileInstance, resume: FileInstance) -> str:
    stem, _, num = cur.file.rpartition(".")
    names = [f"{stem}.{n:0{len(num)}d}" for n in range(file_number(cur.file) + 1, file_number(resume.file))]
    return f"; missing files: {', '.join(names)}" if names else ""
