"""`binlog stream`: a long-running archiver for an RPO of seconds.

A supervised `mariadb-binlog --read-from-remote-server --raw --stop-never` copies the binlogs
into a private spool as the server writes them; every `interval` seconds the bytes past what
the repository holds, cut on an event boundary, go up as one segment, and a heartbeat says
up to which second everything is archived (so a quiet server stays restorable to "now").

The repository is the only state: a (re)start resumes at the oldest file the server still
lists that is not archived whole, re-reads it from its start and uploads only the bytes past
the archived ones, so a SIGKILL loses nothing and duplicates nothing. The copier dies with
us (PR_SET_PDEATHSIG). SIGTERM/SIGINT: one last upload of everything received, then exit 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

from ..credentials import defaults_extra_file
from ..dumps import connect
from ..errors import tail
from ..locks import host_lock
from ..process import killable
from ..session import Session
from .events import STOP, complete_end, events, identity, rotate_target
from .index import BinlogIndex, file_number
from .server import GROUPS, binlog_tool, connection_args, server_binlogs

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def replica_server_id(host: str) -> int:
    """A server id for the dump connection, stable per host and far from real ones."""
    return 4_000_000_000 + zlib.crc32(host.encode()) % 200_000_000


class Streamer:
    def __init__(self, session: Session, host: str, interval: float = 2.0) -> None:
        self.session = session
        self.host = host
        self.h = session.config.host(host)
        self.interval = interval
        self.index = BinlogIndex(session.catalog)
        self.stop = threading.Event()
        self.uploaded = 0  # segments written by this run

    def _master_status(self) -> tuple[str, int, float]:
        h = self.h
        with connect(h.user, h.password_file, socket=h.socket, host=h.host, port=h.port) as conn, conn.cursor() as cur:
            t = time.time()
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        return str(row[0]), int(row[1]), t

    def _start_file(self) -> str:
        server_id, files = server_binlogs(self.h, self.host)
        archived = self.index.instances(self.host)
        for file, size in files:
            done = [i for i in archived if i.file == file and i.server_id == server_id and i.closed]
            if not any(i.contiguous_end == size for i in done):
                return file
        return files[-1][0]

    def _upload(self, spool: Path, status: tuple[str, int, float] | None) -> None:
        """One cycle: new complete bytes of every spooled file, in file order, then the heartbeat."""
        archived = self.index.instances(self.host)
        paths = sorted((p for p in spool.iterdir() if p.is_file()), key=lambda p: file_number(p.name))
        for path in paths:
            data = path.read_bytes()
            if len(data) < 4 + 19:
                continue
            try:
                ident = identity(data)
            except ValueError:
                continue
            inst = next(
                (
                    i
                    for i in archived
                    if (i.server_id, i.created, i.file) == (ident.server_id, ident.created, path.name)
                ),
                None,
            )
            start = inst.contiguous_end if inst else 4
            end = complete_end(data, start) if start <= len(data) else start
            nxt = rotate_target(data, ident.checksum)
            last = None
            for ev in events(data, max(start, 4)):
                last = ev
            closed = nxt is not None or (last is not None and last.type == STOP)
            covers = int(status[2]) - 1 if status and status[0] == path.name and end >= status[1] else 0
            if end > start:
                self.index.write_segment(
                    self.host,
                    ident,
                    path.name,
                    data,
                    start,
                    end,
                    codec=self.session.codec,
                    covers_until=covers,
                    closed=closed,
                    next_file=nxt,
                )
                self.uploaded += 1
            if covers:
                self.index.write_heartbeat(self.host, ident, path.name, end, covers)
            if closed and path != paths[-1]:
                path.unlink()  # archived whole; the copier has moved on

    def run(self, max_seconds: float | None = None) -> int:
        cfg = self.session.config
        deadline = time.monotonic() + max_seconds if max_seconds else None
        with host_lock(cfg.work_dir, f"{self.host}.binlog", "binlog stream"):
            for old in cfg.work_dir.glob(f"bp-binlog-stream-{self.host}-*"):  # a killed run's spool
                shutil.rmtree(old, ignore_errors=True)
            while not self.stop.is_set():
                self._run_copier(deadline)
                if deadline and time.monotonic() >= deadline:
                    break
                self.stop.wait(min(5.0, self.interval * 2))  # the copier died: restart it after a pause
        return self.uploaded

    def _run_copier(self, deadline: float | None) -> None:
        cfg = self.session.config
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        spool = Path(tempfile.mkdtemp(prefix=f"bp-binlog-stream-{self.host}-", dir=cfg.work_dir))
        try:
            start = self._start_file()
            with defaults_extra_file(
                self.h.user, self.h.password_file, host=self.host, work_dir=cfg.work_dir, groups=GROUPS
            ) as creds:
                cmd = [
                    binlog_tool(),
                    f"--defaults-extra-file={creds}",
                    "--read-from-remote-server",
                    "--raw",
                    "--stop-never",
                    f"--stop-never-slave-server-id={replica_server_id(self.host)}",
                    f"--result-file={spool}/",
                    *connection_args(self.h),
                    start,
                ]
                err = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
                proc = subprocess.Popen(
                    killable(cmd),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    preexec_fn=_die_with_parent,
                )
                log.info("streaming binlogs of %s from %s", self.host, start)
                try:
                    while proc.poll() is None and not self.stop.is_set():
                        if deadline and time.monotonic() >= deadline:
                            self.stop.set()
                            break
                        self.stop.wait(self.interval)
                        self._cycle(spool)
                    if self.stop.is_set():
                        self._final(spool, proc)
                    else:
                        self._cycle(spool)
                        err.seek(0)
                        log.warning(
                            "mariadb-binlog for %s exited with %s: %s; restarting",
                            self.host,
                            proc.returncode,
                            tail(err.read()),
                        )
                finally:
                    if proc.poll() is None:
                        proc.terminate()
                        proc.wait(10)
                    err.close()
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def _cycle(self, spool: Path) -> None:
        try:
            status = self._master_status()
        except Exception as e:  # the server is away: upload what we have, vouch for nothing new
            log.warning("cannot read the binlog position of %s: %s", self.host, e)
            status = None
        self._upload(spool, status)

    def _final(self, spool: Path, proc: subprocess.Popen[bytes]) -> None:
        """On stop: wait (briefly) until the copier has everything the server had written, then upload."""
        try:
            status = self._master_status()
        except Exception:
            status = None
        end = time.monotonic() + 10
        while status and proc.poll() is None and time.monotonic() < end:
            p = spool / status[0]
            if p.exists() and p.stat().st_size >= status[1]:
                break
            time.sleep(0.1)
        self._upload(spool, status)


def stream(
    session: Session,
    host: str,
    *,
    interval: float = 2.0,
    max_seconds: float | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `max_seconds`, or `stop` is set); return the segments written."""
    s = Streamer(session, host, interval)
    if stop is not None:
        s.stop = stop
    installed = stop is None
    old = {}
    if installed:

        def on_signal(signum: int, _frame: object) -> None:
            s.stop.set()

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return s.run(max_seconds)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT from now on: installed first thing, so an early stop is clean too."""
    ev = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ev.set())
    return ev
