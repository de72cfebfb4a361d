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
from typing import Any

import pymysql

from .catalog import VerificationReport
from .config import StagingTarget, read_secret_file
from .errors import BackupPipelinesError, ConfigError, RefusedError, ToolError, VerificationFailed, tail
from .process import capture
from .restore import restore_chain
from .session import Session
from .verify import table_fingerprints

log = logging.getLogger(__name__)


def staging_target(session: Session, name: str, host: str) -> StagingTarget:
    targets = session.config.staging
    if name not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(f"staging target {name!r} is not configured (configured: {known})", host=host)
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
    password = read_secret_file(t.password_file, "staging MySQL password") if t.password_file else ""
    kw: dict[str, Any] = {"user": t.user, "password": password, "connect_timeout": 5, "autocommit": True}
    if t.socket is not None:
        kw["unix_socket"] = str(t.socket)
    else:
        kw["host"], kw["port"] = t.host or "127.0.0.1", t.port or 3306
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pymysql.connect(**kw)
        except pymysql.err.OperationalError as err:
            if time.monotonic() > deadline:
                raise ToolError(
                    f"the staging server did not accept connections within {timeout:.0f}s: {err}",
                    hint="check start_command and the server's error log",
                ) from None
            time.sleep(0.5)


def staging_restore(
    session: Session,
    name: str,
    host: str,
    *,
    backup_id: str | None = None,
    at: datetime | str | None = None,
    raise_on_failure: bool = True,
) -> VerificationReport:
    t = staging_target(session, name, host)
    wanted = session.catalog.resolve(host, backup_id=backup_id, at=at)  # fail before stopping anything
    started = datetime.now(UTC)
    datadir = t.datadir.absolute()
    aside = datadir.with_name(datadir.name + ".bp-previous")
    log.info("staging %s: stopping the server to restore %s of %s", name, wanted.id, host)
    _run(t.stop_command, f"stopping staging server {name}", host)
    if aside.exists():
        shutil.rmtree(aside)
    moved = False
    if datadir.exists() and any(datadir.iterdir()):
        datadir.rename(aside)
        moved = True
    t0 = time.monotonic()
    try:
        result = restore_chain(session, host, datadir, backup_id=wanted.id)
        if t.owner and os.geteuid() == 0:
            for p in [datadir, *datadir.rglob("*")]:
                shutil.chown(p, t.owner, t.owner)
    except BaseException:
        shutil.rmtree(datadir, ignore_errors=True)
        if moved:
            aside.rename(datadir)
            try:
                _run(t.start_command, f"restarting staging server {name} on its previous data", host)
            except BackupPipelinesError as err:
                log.error("%s", err)
        raise
    t1 = time.monotonic()
    _run(t.start_command, f"starting staging server {name}", host)
    problems: list[str] = []
    with connect_target(t) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = cur.fetchone()[0]
        tables = table_fingerprints(conn, check=True)
    for table, entry in tables.items():
        if entry.get("check") != "OK":
            problems.append(f"{table}: CHECK TABLE says {entry.get('check')}")
    if moved and not problems:
        shutil.rmtree(aside, ignore_errors=True)
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
            f"staging target {name} restored {wanted.id} of {host} but {len(problems)} table(s) failed "
            "CHECK TABLE: " + "; ".join(problems[:5]),
            host=host,
            backup_id=wanted.id,
            hint=f"the previous staging data is kept at {aside}" if moved else None,
        )
    return report
