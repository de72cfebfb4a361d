"""Logical dumps (what automysqlbackup did), stored and catalogued like every other backup.

A mysqldump dump is one object per database (each a --single-transaction snapshot), plus
`schema.sql` (schema only, every database) and `grants.sql` (users and grants); a
mydumper dump is one tar stream of its output directory. Every object goes through the
same compress/encrypt/hash pipeline and the manifest (kind `dump`) is the commit point.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pymysql

from .catalog import BackupManifest, BinlogInfo, EncryptionInfo, StoredObject, new_backup_id
from .config import HostConfig, read_secret_file
from .credentials import defaults_extra_file
from .engines.dumps import (
    DUMP_COMPLETED,
    MydumperEngine,
    MysqldumpEngine,
    connection_args,
    dump_engine_for,
    parse_mydumper_metadata,
)
from .errors import ConfigError, NotFoundError, RefusedError, ToolError
from .locks import host_lock
from .pipeline import Streamed, stream_command
from .process import run
from .restore import fetch_into_command
from .session import Session

log = logging.getLogger(__name__)
SYSTEM_DATABASES = {"information_schema", "performance_schema", "sys", "mysql"}


def connect(
    user: str,
    password_file: Path | None,
    *,
    socket: Path | None,
    host: str | None,
    port: int | None,
    database: str | None = None,
) -> pymysql.connections.Connection:
    password = read_secret_file(password_file, "MySQL password") if password_file else ""
    kw: dict[str, object] = {"user": user, "password": password, "connect_timeout": 10, "autocommit": True}
    if socket is not None:
        kw["unix_socket"] = str(socket)
    else:
        kw["host"], kw["port"] = host or "127.0.0.1", port or 3306
    if database:
        kw["database"] = database
    return pymysql.connect(**kw)  # type: ignore[arg-type]


def databases_of(hcfg: HostConfig, host: str) -> list[str]:
    if hcfg.dump.databases:
        return list(hcfg.dump.databases)
    try:
        with (
            connect(hcfg.user, hcfg.password_file, socket=hcfg.socket, host=hcfg.host, port=hcfg.port) as c,
            c.cursor() as cur,
        ):
            cur.execute("SHOW DATABASES")
            return sorted(r[0] for r in cur.fetchall() if r[0] not in SYSTEM_DATABASES)
    except pymysql.MySQLError as err:
        raise ToolError(
            f"cannot list the databases of {host}: {err}",
            host=host,
            hint="check the host's socket/host, user and password_file",
        ) from None


def run_dump(
    session: Session,
    host: str,
    *,
    for_date: date | None = None,
    progress: Callable[[int], None] | None = None,
) -> BackupManifest:
    cfg = session.config
    hcfg = cfg.host(host)
    engine = dump_engine_for(hcfg)
    catalog = session.catalog
    codec = session.codec
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    backup_id = new_backup_id("dump", started)
    with (
        host_lock(cfg.work_dir, host, "logical dump", kind="dump"),  # never waits for physical backups
        catalog.lease(host, [backup_id], purpose="logical dump"),  # cleanup anywhere leaves it alone
    ):
        databases = databases_of(hcfg, host)
        if not databases:
            raise NotFoundError(
                f"host {host} has no user databases that {hcfg.user} can see to dump",
                host=host,
                hint=(
                    "SHOW DATABASES lists only what the user may read: grant the dump privileges "
                    f"(GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO '{hcfg.user}'@...; "
                    "see docs/dumps-and-retention.md) or name them in hosts.<host>.dump.databases"
                ),
            )
        t0 = time.monotonic()
        hints = catalog.size_hints(host, "dump")
        done: list[Streamed] = []
        names: list[str] = []
        binlog: BinlogInfo | None = None
        total = 0

        def tick(n: int) -> None:
            if progress:
                progress(total + n)

        try:
            with (
                defaults_extra_file(hcfg.user, hcfg.password_file, host=host, work_dir=cfg.work_dir) as cnf,
                tempfile.TemporaryDirectory(prefix=f"bp-dump-{host}-", dir=cfg.work_dir) as scratch,
            ):

                def put(name: str, cmd: list[str], *, marker: bytes | None, cwd: Path | None = None) -> None:
                    nonlocal total
                    key = catalog.object_key(host, backup_id, f"{name}{codec.suffix}")
                    s = stream_command(
                        session,
                        cmd,
                        key,
                        what=f"dump of {host} ({name})",
                        host=host,
                        backup_id=backup_id,
                        stdout_marker=marker,
                        progress=tick,
                        cwd=cwd,
                        size_hint=hints.get(name),
                        throttle=hcfg.throttle,
                    )
                    done.append(s)
                    names.append(name)
                    total += s.source_size

                if isinstance(engine, MysqldumpEngine):
                    engine.resolve(engine.binary, "mariadb-client")
                    for db in databases:
                        put(f"db/{db}.sql", engine.database_command(cnf, db), marker=DUMP_COMPLETED)
                    put("schema.sql", engine.schema_command(cnf, databases), marker=DUMP_COMPLETED)
                    put("grants.sql", engine.grants_command(cnf), marker=DUMP_COMPLETED)
                else:
                    assert isinstance(engine, MydumperEngine)
                    engine.resolve(engine.binary, "mydumper")
                    out = Path(scratch) / "dump"
                    for db in databases:
                        d = out / db
                        d.parent.mkdir(parents=True, exist_ok=True)
                        run(
                            engine.dump_command(cnf, d, db),
                            what=f"mydumper of {host} ({db})",
                            host=host,
                            backup_id=backup_id,
                        )
                        if not (d / "metadata").exists() or (d / "metadata.partial").exists():
                            raise ToolError(
                                f"mydumper of {host} ({db}) exited without finishing its metadata",
                                host=host,
                                backup_id=backup_id,
                            )
                        meta = parse_mydumper_metadata((d / "metadata").read_text(errors="replace"))
                        if binlog is None and "Log" in meta and "Pos" in meta:
                            binlog = BinlogInfo(file=meta["Log"], position=int(meta["Pos"]), gtid=meta.get("GTID"))
                    put("mydumper.tar", ["tar", "-C", str(out), "-cf", "-", "."], marker=None)
        except BaseException:
            session.repo.delete([s.key for s in done])  # no manifest: leave nothing behind either
            raise
        finished = datetime.now(UTC)
        manifest = BackupManifest(
            id=backup_id,
            host=host,
            kind="dump",
            engine=engine.name,
            started_at=started,
            finished_at=finished,
            duration_seconds=round(time.monotonic() - t0, 3),
            size_bytes=sum(s.size for s in done),
            source_size_bytes=sum(s.source_size for s in done),
            compression=codec.compression,
            compression_level=codec.level if codec.compression != "none" else None,
            encryption=EncryptionInfo(scheme=codec.encryption, key_id=session.keyring.current.key_id)
            if codec.encryption and session.keyring.current
            else None,
            objects=[
                StoredObject(name=n, key=s.key, size=s.size, sha256=s.sha256, source_size=s.source_size)
                for n, s in zip(names, done, strict=True)
            ],
            binlog=binlog,
            databases=databases,
            labels={"for_date": (for_date or finished.date()).isoformat()},
        )
        catalog.commit_manifest(manifest)
        log.info("dump %s of %s committed: %d objects, %d bytes", backup_id, host, len(done), manifest.size_bytes)
        return manifest


class _Target:
    """Where a dump is loaded: a configured host or a staging target."""

    def __init__(self, session: Session, name: str) -> None:
        cfg = session.config
        if name in cfg.staging:
            t = cfg.staging[name]
            if not t.staging:
                raise RefusedError(f"target {name!r} is not marked `staging: true`; refusing to load into it")
            self.staging = True
            self.user, self.password_file = t.user, t.password_file
            self.socket, self.host, self.port = t.socket, t.host, t.port
        elif name in cfg.hosts:
            h = cfg.hosts[name]
            self.staging = False
            self.user, self.password_file = h.user, h.password_file
            self.socket, self.host, self.port = h.socket, h.host, h.port
        else:
            raise ConfigError(f"target {name!r} is neither a configured host nor a staging target")
        self.name = name

    def conn_args(self) -> list[str]:
        return connection_args(socket=self.socket, hostname=self.host, port=self.port)

    def existing(self) -> set[str]:
        with (
            connect(self.user, self.password_file, socket=self.socket, host=self.host, port=self.port) as c,
            c.cursor() as cur,
        ):
            cur.execute("SHOW DATABASES")
            return {r[0] for r in cur.fetchall()}


def restore_dump(
    session: Session,
    host: str,
    target_name: str,
    *,
    backup_id: str | None = None,
    database: str | None = None,
    grants: bool = False,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Load a dump (all databases, or one) into a running server."""
    m = session.catalog.resolve(host, backup_id=backup_id, kinds=("dump",))
    if database and database not in (m.databases or []):
        raise NotFoundError(
            f"dump {m.id} of {host} has no database {database!r} (it has: {', '.join(m.databases or [])})",
            host=host,
            backup_id=m.id,
        )
    target = _Target(session, target_name)
    wanted = [database] if database else list(m.databases or [])
    clash = sorted(set(wanted) & target.existing())
    if clash and not target.staging and not force:
        raise RefusedError(
            f"{target_name} already has database(s) {', '.join(clash)}; loading would overwrite their tables",
            host=host,
            backup_id=m.id,
            hint="load into a staging target, or pass --force if that is intended",
        )
    hcfg = session.config.host(host)
    engine = (
        dump_engine_for(hcfg)
        if m.engine == hcfg.dump.engine
        else (MydumperEngine(hcfg) if m.engine == "mydumper" else MysqldumpEngine(hcfg))
    )
    total = sum(o.source_size or o.size for o in m.objects)
    fed = 0

    def tick(n: int) -> None:
        nonlocal fed
        fed += n
        if progress:
            progress(fed, total)

    t0 = time.monotonic()
    work = session.config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    with (
        session.catalog.lease(host, [m.id], purpose=f"restore-dump into {target_name}"),
        defaults_extra_file(target.user, target.password_file, work_dir=work) as cnf,
    ):
        if isinstance(engine, MydumperEngine):
            with tempfile.TemporaryDirectory(prefix="bp-myloader-", dir=work) as d:
                obj = next(o for o in m.objects if o.name == "mydumper.tar")
                fetch_into_command(
                    session, m, ["tar", "-x", "-C", d], what=f"unpacking dump {m.id}", obj=obj, progress=tick
                )
                engine.resolve(engine.loader, "mydumper")
                for db in wanted:
                    run(
                        engine.load_command(cnf, target.conn_args(), directory=Path(d) / db, database=db),
                        what=f"myloader of {db} into {target_name}",
                        host=host,
                        backup_id=m.id,
                    )
        else:
            names = [f"db/{db}.sql" for db in wanted] + (["grants.sql"] if grants else [])
            for name in names:
                obj = next(o for o in m.objects if o.name == name)
                fetch_into_command(
                    session,
                    m,
                    engine.load_command(cnf, target.conn_args()),
                    what=f"loading {name} of dump {m.id} into {target_name}",
                    obj=obj,
                    progress=tick,
                )
    return {
        "host": host,
        "backup_id": m.id,
        "target": target_name,
        "databases": wanted,
        "grants": grants,
        "engine": m.engine,
        "bytes": fed,
        "seconds": round(time.monotonic() - t0, 3),
    }
