"""Restore verification: proof that a backup restores into a server that starts and whose tables check.

The sandbox is a temp directory under the work dir: the chain is restored into it, a
private server (no networking, no grant tables, no option files) is started on it,
every table is checked (`CHECK TABLE`), counted and checksummed, and the sandbox is
torn down. The report is stored in the repository beside the backup, so Dagster's
asset checks and the retention policy can see which chains are proven.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from .binlog.replay import prepare_restore
from .catalog import VerificationReport
from .errors import BackupPipelinesError, VerificationFailed
from .mysqld import MariaDBServer
from .session import Session

log = logging.getLogger(__name__)

SYSTEM_SCHEMAS = ("information_schema", "performance_schema", "sys")


def table_fingerprints(
    conn: pymysql.connections.Connection, *, include_mysql: bool = True, check: bool = False
) -> dict[str, dict[str, Any]]:
    """Per-table row count and CHECKSUM TABLE (and CHECK TABLE status when `check`)."""
    excluded = list(SYSTEM_SCHEMAS) + ([] if include_mysql else ["mysql"])
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name, engine FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ("
            + ",".join(["%s"] * len(excluded))
            + ") ORDER BY table_schema, table_name",
            excluded,
        )
        tables = list(cur.fetchall())
        out: dict[str, dict[str, Any]] = {}
        for schema, name, engine in tables:
            q = f"`{schema.replace('`', '``')}`.`{name.replace('`', '``')}`"
            entry: dict[str, Any] = {"engine": engine}
            out[f"{schema}.{name}"] = entry
            try:
                if check:
                    cur.execute(f"CHECK TABLE {q}")
                    rows = cur.fetchall()
                    statuses = [r[3] for r in rows if r[2] == "status"]
                    errors = [r[3] for r in rows if r[2] == "error"]
                    ok = (
                        not errors
                        and bool(statuses)
                        and all(s in ("OK", "Table is already up to date") for s in statuses)
                    )
                    entry["check"] = "OK" if ok else "; ".join(errors + statuses) or "no status"
                cur.execute(f"SELECT COUNT(*) FROM {q}")
                entry["rows"] = int(cur.fetchone()[0])
                cur.execute(f"CHECKSUM TABLE {q}")
                entry["checksum"] = cur.fetchone()[1]
            except pymysql.MySQLError as err:  # a table the server cannot open is a finding, not a crash
                if not check:
                    raise
                entry["check"] = f"cannot be read: {err.args[-1] if err.args else err}"
        return out


def verify_backup(
    session: Session,
    host: str,
    *,
    backup_id: str | None = None,
    at: datetime | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    raise_on_failure: bool = True,
) -> VerificationReport:
    cfg = session.config
    hcfg = cfg.host(host)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    wanted = session.catalog.resolve(host, backup_id=backup_id, at=at)  # a bad --at leaves no sandbox behind
    sandbox = Path(tempfile.mkdtemp(prefix=f"bp-verify-{host}-", dir=cfg.work_dir))
    problems: list[str] = []
    tables: dict[str, dict[str, Any]] = {}
    server_version = None
    chain = [wanted.id]
    t0 = t1 = t2 = time.monotonic()
    try:
        restore = prepare_restore(session, host, backup_id=wanted.id if at is None else None, at=at, progress=progress)
        result = restore(sandbox / "datadir")
        chain = result.chain
        t1 = time.monotonic()
        server = MariaDBServer(sandbox / "datadir", sandbox / "run", binary=hcfg.server_binary, skip_grant_tables=True)
        with server, server.connect() as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                server_version = cur.fetchone()[0]
            tables = table_fingerprints(conn, check=True)
        t2 = time.monotonic()
        for name, entry in tables.items():
            if entry.get("check") != "OK":
                problems.append(f"{name}: CHECK TABLE says {entry.get('check')}")
        if not tables:
            problems.append("the restored server has no tables at all")
    except (BackupPipelinesError, pymysql.MySQLError) as err:
        problems.append(f"{type(err).__name__}: {getattr(err, 'message', err)}")
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
    report = VerificationReport(
        host=host,
        backup_id=wanted.id,
        chain=chain,
        started_at=started,
        finished_at=datetime.now(UTC),
        passed=not problems,
        restore_seconds=round(t1 - t0, 3),
        check_seconds=round(t2 - t1, 3),
        server_version=server_version,
        tables=tables,
        problems=problems,
        target="sandbox",
    )
    session.catalog.write_verification(report)
    if problems and raise_on_failure:
        raise VerificationFailed(
            f"verification of backup {wanted.id} of {host} found {len(problems)} problem(s): "
            + "; ".join(problems[:5]),
            host=host,
            backup_id=wanted.id,
            hint="do not rely on this chain; take a new full backup and investigate the source tables",
        )
    return report
