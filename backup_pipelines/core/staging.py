"""Replaying a backup into a staging server: stop it, restore the chosen point, start it, check it.

Only targets marked `staging: true` are ever touched. The previous datadir is moved
aside, not deleted, until the restored server has started and passed its checks; if
anything fails before that, it is put back and the server restarted, so a failed
staging restore leaves staging as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from .binlog.replay import prepare_restore
from .catalog import VerificationReport
from .config import StagingTarget
from .errors import BackupPipelinesError, ConfigError, RefusedError, ToolError, VerificationFailed, tail
from .mysql_client import connect
from .process import capture
from .session import Session
from .verify import table_fingerprints

log = logging.getLogger(__name__)


def staging_target(session: Session, name: str, host: str) -> StagingTarget:
    targets = session.config.staging
    if name not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(
            f"staging target {name!r} is not configured (configured: {known})",
            host=host,
            hint="check --target, or add the server under staging: in the config (with staging: true)",
        )
    t = targets[name]
    if not t.staging:
        raise RefusedError(
            f"target {name!r} is not marked `staging: true`; refusing to overwrite it",
            host=host,
            hint="staging restores replace the target's data; mark only disposable servers as staging",
        )
    if t.source_host is not None and t.source_host != host:
        raise RefusedError(f"staging target {name!r} takes backups of {t.source_host}, not {host}", host=host)
    return t


def _run(cmd: list[str], what: str, host: str, timeout: float = 600) -> None:
    res = capture(cmd, what=what, timeout=timeout, host=host)
    if res.returncode != 0:
        raise ToolError(
            f"{what} failed with status {res.returncode}",
            host=host,
            command=" ".join(cmd),
            stderr_tail=tail(res.stderr or res.stdout),
        )


def connect_target(t: StagingTarget, timeout: float = 120) -> pymysql.connections.Connection:
    """Wait for the started server to accept connections, then return one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(
                t.user,
                t.password_file,
                socket=t.socket,
                host=t.host,
                port=t.port,
                connect_timeout=5,
                what="staging MySQL password",
            )
        except pymysql.err.OperationalError as err:
            if time.monotonic() > deadline:
                raise ToolError(
                    f"the staging server did not accept connections within {timeout:.0f}s: {err}",
                    hint="check start_command and the server's error log",
                ) from None
            time.sleep(0.5)


def _roll_back(t: StagingTarget, name: str, host: str, datadir: Path, aside: Path, moved: bool) -> str:
    """Put staging back as it was after a failure past the swap; return what was done, for the error.

    The server is stopped first (it may be running on the restored data). If that fails the
    directories are left alone, with the previous data still kept aside, since moving a
    datadir under a live server would corrupt both.
    """
    try:
        _run(t.stop_command, f"stopping staging server {name} to roll back", host)
    except BackupPipelinesError as err:
        log.error("%s", err)
        return f"could not stop the server to roll back; the previous data is kept at {aside}" if moved else ""
    shutil.rmtree(datadir, ignore_errors=True)
    if not moved:
        return "the restored data was removed (the target had none before)"
    aside.rename(datadir)
    try:
        _run(t.start_command, f"restarting staging server {name} on its previous data", host)
    except BackupPipelinesError as err:
        log.error("%s", err)
        return f"the previous data was put back at {datadir} but the server did not restart: start it by hand"
    return f"the previous data was put back at {datadir} and the server restarted on it"


def _check(t: StagingTarget) -> tuple[str | None, dict[str, dict[str, Any]], list[str]]:
    """Server version, table fingerprints and problems of the started server."""
    with connect_target(t, timeout=t.start_timeout_seconds) as conn:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                version = cur.fetchone()[0]
            tables = table_fingerprints(conn, check=True)
        except pymysql.MySQLError as err:
            return None, {}, [f"checking the tables failed: {err}"]
    problems = [
        f"{table}: CHECK TABLE says {entry.get('check')}"
        for table, entry in tables.items()
        if entry.get("check") != "OK"
    ]
    return version, tables, problems


def staging_restore(
    session: Session,
    name: str,
    host: str,
    *,
    backup_id: str | None = None,
    at: datetime | str | None = None,
    raise_on_failure: bool = True,
) -> VerificationReport:
    """Stop, swap in the restored point, start, check; on any failure after the swap, roll back.

    The previous datadir is kept as `<datadir>.bp-previous` until the restored server has
    passed its checks. Finding one at the start means an earlier run was interrupted past the
    swap: it may be the only good copy, so the run refuses rather than delete it.
    """
    t = staging_target(session, name, host)
    wanted = session.catalog.resolve(host, backup_id=backup_id, at=at)  # fail before stopping anything
    restore = prepare_restore(session, host, backup_id=wanted.id if at is None else None, at=at)
    started = datetime.now(UTC)
    datadir = t.datadir.absolute()
    aside = datadir.with_name(datadir.name + ".bp-previous")
    if aside.exists():
        raise RefusedError(
            f"staging target {name} has {aside} from an interrupted restore: it may hold the only copy of "
            "the data staging ran before",
            host=host,
            hint=f"check it, then either move it back over {datadir} or delete it, and re-run",
        )
    log.info("staging %s: stopping the server to restore %s of %s", name, wanted.id, host)
    _run(t.stop_command, f"stopping staging server {name}", host)
    moved = False
    if datadir.exists() and any(datadir.iterdir()):
        datadir.rename(aside)
        moved = True
    t0 = time.monotonic()
    try:
        result = restore(datadir)
        if t.owner and os.geteuid() == 0:
            for p in [datadir, *datadir.rglob("*")]:
                shutil.chown(p, t.owner, t.owner)
        t1 = time.monotonic()
        _run(t.start_command, f"starting staging server {name}", host)
        version, tables, problems = _check(t)
    except BaseException as err:
        done = _roll_back(t, name, host, datadir, aside, moved)
        if done and isinstance(err, BackupPipelinesError):
            err.hint = f"{done}; {err.hint}" if err.hint else done
        raise
    rolled_back = _roll_back(t, name, host, datadir, aside, moved) if problems else None
    if rolled_back:
        log.warning("staging %s failed its checks on %s of %s: %s", name, wanted.id, host, rolled_back)
    if moved and not problems:
        shutil.rmtree(aside, ignore_errors=True)  # only now: the restore passed its checks
    report = VerificationReport(
        host=host,
        backup_id=wanted.id,
        chain=result.chain,
        started_at=started,
        finished_at=datetime.now(UTC),
        passed=not problems,
        restore_seconds=round(t1 - t0, 3),
        check_seconds=round(time.monotonic() - t1, 3),
        server_version=version,
        tables=tables,
        problems=problems,
        target=name,
    )
    session.catalog.write_verification(report)
    if problems and raise_on_failure:
        raise VerificationFailed(
            f"staging target {name} restored {wanted.id} of {host} but its checks failed: " + "; ".join(problems[:5]),
            host=host,
            backup_id=wanted.id,
            hint=rolled_back or None,
        )
    return report
