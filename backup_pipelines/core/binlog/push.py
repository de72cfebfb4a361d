"""`binlog push`: one shot, archive every byte of the host's binlogs not archived yet.

Every file the server still lists is fetched as it is now (the active one too, so the
transactions committed before the command started are archived without rotating the
log), and the bytes past what the repository already holds, cut on an event boundary,
become one new segment. Afterwards continuity is walked from the oldest retained backup:
a file purged on the server before it was archived is a gap, reported with exit 4 after
everything else was archived.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from ..locks import host_lock
from ..session import Session
from .check import continuity
from .continuity import iso
from .events import STOP, complete_end, events, identity, rotate_target
from .index import BinlogIndex, FileInstance, SegmentRecord
from .server import fetch_file, server_binlogs

log = logging.getLogger(__name__)


class BinlogGapError(IntegrityError):
    """Binlogs needed for continuity were purged before they were archived."""


@dataclass
class PushResult:
    host: str
    server_id: int
    archived: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    latest_restorable: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return self.__dict__


def archive_file_bytes(
    session: Session,
    index: BinlogIndex,
    host: str,
    file: str,
    data: bytes,
    archived: list[FileInstance],
    covers_until: int,
) -> SegmentRecord | None:
    """Archive what `data` (the whole file as read now) holds beyond the archived bytes of that instance."""
    ident = identity(data)
    inst = next(
        (i for i in archived if (i.server_id, i.created, i.file) == (ident.server_id, ident.created, file)), None
    )
    start = inst.contiguous_end if inst else 4
    end = complete_end(data, start) if start <= len(data) else start
    nxt = rotate_target(data, ident.checksum)
    last = None
    for ev in events(data, max(start, 4)):
        last = ev
    closed = nxt is not None or (last is not None and last.type == STOP and last.end == end)
    if end <= start:
        return None
    return index.write_segment(
        host,
        ident,
        file,
        data,
        start,
        end,
        codec=session.codec,
        covers_until=covers_until,
        closed=closed,
        next_file=nxt,
    )


def push(session: Session, host: str) -> PushResult:
    cfg = session.config
    h = cfg.host(host)
    index = BinlogIndex(session.catalog)
    t0 = time.monotonic()
    with host_lock(cfg.work_dir, f"{host}.binlog", "binlog push"):
        covers_until = int(time.time()) - 1  # fetched after this second began: all its commits are in
        server_id, files = server_binlogs(h, host)
        res = PushResult(host, server_id)
        archived = index.instances(host)
        for file, size in files:
            done = [i for i in archived if i.file == file and i.server_id == server_id and i.closed]
            if any(i.contiguous_end == size for i in done):
                continue  # this exact file was archived whole
            with tempfile.TemporaryDirectory(prefix=f"bp-binlog-{host}-", dir=_work(cfg.work_dir)) as tmp:
                path = fetch_file(h, host, file, Path(tmp), cfg.work_dir)
                data = path.read_bytes()
            rec = archive_file_bytes(session, index, host, file, data, archived, covers_until)
            if rec is not None:
                res.archived.append({"file": file, "start": rec.start, "end": rec.end, "key": rec.key})
                log.info("archived %s [%d, %d) of %s", file, rec.start, rec.end, host)
            if file == files[-1][0]:  # the active file: vouch for the quiet time since its last transaction
                index.write_heartbeat(host, identity(data), file, complete_end(data), covers_until)
        res.gaps, latest = continuity_gaps(session, index, host)
        res.latest_restorable = iso(latest) if latest is not None else None
    res.seconds = round(time.monotonic() - t0, 3)
    return res


def _work(work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def continuity_gaps(session: Session, index: BinlogIndex, host: str) -> tuple[list[str], int | None]:
    return continuity(session.catalog, index.instances(host), host)


def raise_for_gaps(res: PushResult) -> None:
    if res.gaps:
        raise BinlogGapError(
            f"binlog push of {res.host} archived {len(res.archived)} segment(s) but found "
            f"{len(res.gaps)} gap(s): " + "; ".join(res.gaps),
            host=res.host,
            hint="points in time inside a gap cannot be restored; take a new full backup now so that "
            "continuity starts again, and push (or stream) binlogs more often than they are purged "
            "(expire_logs_days / binlog_expire_logs_seconds)",
        )
