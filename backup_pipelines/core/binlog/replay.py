"""`restore --at T` / `--gtid G`: the newest backup before the point, then its binlogs replayed to it.

Exactness: the stop is computed here, not by `mariadb-binlog --stop-datetime` (second-granular
on event times and read in the session time zone). Every transaction is ended by an event
whose timestamp is its commit second; the replay is the longest prefix of the binlog, from
the backup's position, whose transactions all committed at or before T (second granularity:
a commit at T.9 has timestamp T and is included), and `--stop-position` cuts it there.

Safety: coverage is checked from the catalog before anything is fetched, so a refused restore
never touches the target. The backup is restored and replayed in a hidden sibling of the
target, under a private server (no networking, no grants), in ONE mariadb-binlog | mariadb
session, so temporary tables spanning files survive; the target appears only by a rename.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..catalog import PHYSICAL, BackupManifest, parse_point_in_time
from ..errors import ConfigError, NotFoundError, ToolError, tail
from ..mysqld import MariaDBServer
from ..process import Tool, describe
from ..restore import RestoreResult, check_target, restore_chain
from ..session import Session
from .continuity import Walk, iso, walk
from .events import identity, transactions
from .index import BinlogIndex, FileInstance, has_binlogs
from .push import BinlogGapError
from .server import binlog_tool

log = logging.getLogger(__name__)


def parse_point(text: str | datetime) -> int:
    """ISO 8601 to unix seconds; a time without a zone is UTC; fractions are dropped (binlog times are seconds)."""
    return int(parse_point_in_time(text).timestamp() // 1)


@dataclass
class Plan:
    backup: BackupManifest
    walk: Walk
    files: list[tuple[FileInstance, int, int]]  # (instance, replay from, fetch up to)


def _gtid_key(g: str) -> tuple[int, int]:
    d, _s, n = g.split("-")
    return int(d), int(n)


def plan_point(session: Session, host: str, at: int | None, gtid: str | None) -> Plan:
    index = BinlogIndex(session.catalog)
    instances = index.instances(host)
    backups = [b for b in session.catalog.list_backups(host, kinds=PHYSICAL)]
    if gtid is not None:
        at = _gtid_time(instances, gtid, host)
    assert at is not None
    before = [b for b in backups if int(b.finished_at.timestamp()) <= at]
    if gtid is not None:
        dom, seq = _gtid_key(gtid)
        before = [b for b in before if not (b.binlog and b.binlog.gtid and _covers(b.binlog.gtid, dom, seq))] or before
    if not before:
        first = backups[0].finished_at.isoformat() if backups else None
        raise NotFoundError(
            f"host {host} has no completed backup finished at or before {iso(at)}",
            host=host,
            hint=f"the earliest restorable point is {first}" if first else f"take a full backup of {host} first",
        )
    b = before[-1]
    w = walk(instances, b)
    if w.latest is None or at > w.latest:
        text = (
            f"binlogs of {host} do not reach {iso(at)} from backup {b.id}: the latest restorable time is "
            f"{iso(w.latest)}"
        )
        if w.gap:
            raise BinlogGapError(
                text + f" ({w.gap})",
                host=host,
                backup_id=b.id,
                hint="restore a point before the gap, or a point after a newer backup",
            )
        raise NotFoundError(
            text,
            host=host,
            backup_id=b.id,
            hint=f"run `backup-pipelines binlog push --host {host}` (or keep `binlog stream` running) and retry",
        )
    return Plan(b, w, [(p.instance, p.start, p.end) for p in w.parts])


def _covers(state: str, dom: int, seq: int) -> bool:
    """Whether a GTID position (comma list) already includes domain `dom` up to `seq`."""
    for g in state.split(","):
        g = g.strip()
        if g and _gtid_key(g)[0] == dom and _gtid_key(g)[1] >= seq:
            return True
    return False


def _gtid_time(instances: list[FileInstance], gtid: str, host: str) -> int:
    try:
        dom, seq = _gtid_key(gtid)
    except ValueError:
        raise ConfigError(
            f"--gtid {gtid!r} is not a MariaDB GTID", hint="write it as domain-server-seq, e.g. 0-1-42"
        ) from None
    for inst in instances:
        for s in inst.segments:
            if s.first_gtid and s.last_gtid:
                a, b = _gtid_key(s.first_gtid), _gtid_key(s.last_gtid)
                if a[0] == dom and a[1] <= seq <= b[1] and s.last_time is not None:
                    return s.last_time
    raise NotFoundError(f"GTID {gtid} of host {host} is in no archived binlog", host=host)


def _materialise(index: BinlogIndex, inst: FileInstance, start: int, end: int, path: Path) -> None:
    """A local copy of the file with its header and bytes [start, end) (sparse elsewhere)."""
    with open(path, "wb") as f:
        for s in inst.covered():
            if s.start == 4 or (s.end > start and s.start < end):
                f.seek(s.start)

                class _W:
                    def write(self, data: Any) -> int:
                        f.write(data)
                        return len(data)

                    def finish(self) -> None:
                        pass

                if s.start == 4:
                    f.seek(0)
                    f.write(b"\xfebin")
                index.fetch(s, _W())


def _stop(paths: list[Path], plan: Plan, at: int, gtid: str | None) -> tuple[int, int, int, str | None]:
    """(files to replay, stop position in the last, transactions, last GTID): the longest prefix at or before T."""
    count, last_gtid = 0, None
    stop_file, stop_pos = 0, plan.files[0][1]
    for i, (path, (_inst, start, end)) in enumerate(zip(paths, plan.files, strict=True)):
        data = path.read_bytes()
        checksum = identity(data).checksum
        for t in transactions(data, start, checksum=checksum):
            if t.end > end:
                break
            if gtid is None and t.commit_time > at:
                return stop_file, stop_pos, count, last_gtid
            count, last_gtid, stop_file, stop_pos = count + 1, t.gtid, i, t.end
            if gtid is not None and t.gtid == gtid:
                return stop_file, stop_pos, count, last_gtid
    if gtid is not None:
        raise NotFoundError(f"GTID {gtid} is not in the binlogs after backup {plan.backup.id}", host=plan.backup.host)
    return stop_file, stop_pos, count, last_gtid


def restore_point(
    session: Session,
    host: str,
    target: Path,
    *,
    at: str | datetime | None = None,
    gtid: str | None = None,
    progress: Any = None,
) -> RestoreResult:
    target = Path(target).absolute()
    check_target(target)
    point = parse_point(at) if at is not None else None
    plan = plan_point(session, host, point, gtid)  # refuses before anything is touched
    index = BinlogIndex(session.catalog)
    t0 = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.bp-pitr-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=0o700)
    try:
        binlogs = work / "binlogs"
        binlogs.mkdir()
        paths = []
        for inst, start, end in plan.files:
            p = binlogs / inst.file
            _materialise(index, inst, start, end, p)
            paths.append(p)
        stop_file, stop_pos, count, last_gtid = _stop(paths, plan, point or 0, gtid)
        fetch_s = time.monotonic() - t0
        staged = work / "data"
        res = restore_chain(session, host, staged, backup_id=plan.backup.id, progress=progress)
        t1 = time.monotonic()
        if count:
            _replay(host, plan, staged, work, paths[: stop_file + 1], plan.files[0][1], stop_pos)
        replay_s = time.monotonic() - t1
        check_target(target)
        if target.exists():
            target.rmdir()
        os.rename(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res.target = str(target)
    res.binlog = {
        "backup_position": plan.backup.binlog.model_dump() if plan.backup.binlog else None,
        "stop_file": plan.files[stop_file][0].file if count else None,
        "stop_position": stop_pos if count else None,
        "transactions": count,
        "last_gtid": last_gtid,
        "point": iso(point) if point is not None else None,
        "latest_restorable": iso(plan.walk.latest),
    }
    res.timings.update({"binlog_fetch_seconds": round(fetch_s, 3), "replay_seconds": round(replay_s, 3)})
    return res


def _replay(host: str, plan: Plan, datadir: Path, work: Path, files: list[Path], start: int, stop: int) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="bp-replay-"))  # short: a socket path must stay under 108 bytes
    try:
        _replay_in(host, plan, datadir, run_dir, files, start, stop)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _replay_in(host: str, plan: Plan, datadir: Path, run_dir: Path, files: list[Path], start: int, stop: int) -> None:
    srv = MariaDBServer(
        datadir, run_dir, skip_grant_tables=True, extra_args=["--gtid-strict-mode=1", "--skip-slave-start"]
    )
    client = shutil.which("mariadb") or shutil.which("mysql") or "mariadb"
    producer = [binlog_tool(), f"--start-position={start}", f"--stop-position={stop}", *map(str, files)]
    consumer = [client, "--no-defaults", f"--socket={srv.socket}", "--user=root", "--binary-mode"]
    with (
        srv,
        Tool(producer, what="reading archived binlogs", stdout=subprocess.PIPE, host=host) as prod,
        Tool(consumer, what="replaying binlogs", stdin=prod.proc.stdout, host=host) as cons,
    ):
        assert prod.proc.stdout is not None
        prod.proc.stdout.close()
        rc_c = cons.wait()
        rc_p = prod.wait()
        if rc_p != 0:
            prod.check(rc=rc_p)
        if rc_c != 0:
            raise ToolError(
                f"replaying the binlogs of {host} after backup {plan.backup.id} failed (mariadb exit {rc_c})",
                host=host,
                backup_id=plan.backup.id,
                command=f"{describe(producer)} | {describe(consumer)}",
                stderr_tail=tail(cons.stderr_text()),
                hint="nothing was written to the target; the binlogs may not match the backup",
            )
    for leftover in ("mysqld.pid",):
        (datadir / leftover).unlink(missing_ok=True)


def prepare_restore(
    session: Session,
    host: str,
    *,
    backup_id: str | None = None,
    at: str | datetime | None = None,
    gtid: str | None = None,
    progress: Any = None,
) -> Callable[[Path], RestoreResult]:
    """Check a restore point now (refusing before anything is stopped or touched); restore it later.

    A time restores exactly that second by binlog replay where the host has archived binlogs;
    without any, it restores the newest backup finished at or before it, as before.
    """
    if backup_id is None and (gtid is not None or (at is not None and has_binlogs(session.catalog, host))):
        plan_point(session, host, parse_point(at) if at is not None else None, gtid)
        return lambda target: restore_point(session, host, target, at=at, gtid=gtid, progress=progress)
    wanted = session.catalog.resolve(host, backup_id=backup_id, at=at)
    return lambda target: restore_chain(session, host, target, backup_id=wanted.id, progress=progress)
