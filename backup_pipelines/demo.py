"""The main job on embedded defaults: a throwaway MariaDB, a local encrypted repository.

full backup -> writes -> incremental -> writes -> incremental -> restore -> verification,
then a short summary. Everything lives under one work directory; the server is
always stopped. The same core calls run here as in production.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from .core.backup import run_physical_backup
from .core.config import parse_config
from .core.crypto import generate_key_text
from .core.errors import RefusedError, ToolError
from .core.mysqld import MariaDBServer, free_port
from .core.process import capture
from .core.restore import restore_chain
from .core.session import Session
from .core.verify import table_fingerprints, verify_backup

MARKER = ".backup-pipelines-demo"
DEMO_HOST = "demo"
BACKUP_GRANTS = "RELOAD, PROCESS, BINLOG MONITOR"  # mariabackup 10.11's minimum
DUMP_GRANTS = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES"  # consistent logical dumps (the Dagster demo runs them)


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def prepare_work_dir(work: Path) -> None:
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise RefusedError(
                f"{work} is not empty and is not a demo directory; refusing to use it",
                hint="pass --work-dir with a new or empty directory",
            )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("created by backup-pipelines demo; safe to delete\n")


DEMO_STAGING = "demo_staging"


def demo_config(work: Path, server: MariaDBServer, *, staging: bool = False) -> dict[str, Any]:
    """The embedded defaults: local filesystem repository, zstd, encrypted, one host (+ its staging server)."""
    doc: dict[str, Any] = {
        "repository": {
            "url": f"file://{work / 'repository'}",
            "compression": "zstd",
            "encryption_key_file": str(work / "secrets" / "repo.key"),
        },
        "hosts": {
            DEMO_HOST: {
                "engine": "mariabackup",
                "datadir": str(server.datadir),
                "socket": str(server.socket),
                "user": "backup",
                "password_file": str(work / "secrets" / "demo.password"),
            }
        },
        "work_dir": str(work / "tmp"),
    }
    if staging:
        doc["staging"] = {DEMO_STAGING: staging_entry(work)}
    return doc


def _staging_server(work: Path) -> MariaDBServer:
    return MariaDBServer(work / "staging" / "data", work / "staging" / "run", buffer_pool="64M")


def staging_entry(work: Path) -> dict[str, Any]:
    """A staging server run the way an init system would: start-stop-daemon with a pid file.

    Staging restores stop it, swap its datadir and start it again by these commands, as
    `systemctl stop/start mariadb` would on a real staging machine.
    """
    import getpass

    server = _staging_server(work)
    ssd = shutil.which("start-stop-daemon") or "/usr/sbin/start-stop-daemon"
    pidfile = str(work / "staging" / "run" / "daemon.pid")
    return {
        "staging": True,
        "source_host": DEMO_HOST,
        "datadir": str(server.datadir),
        "socket": str(server.socket),
        "user": getpass.getuser(),  # unix_socket account made by mariadb-install-db (source and staging alike)
        "start_command": [ssd, "--start", "--background", "--make-pidfile", "--pidfile", pidfile, "--exec",
                          server.command()[0], "--", *server.command()[1:]],
        "stop_command": [ssd, "--stop", "--oknodo", "--pidfile", pidfile, "--retry", "TERM/60/KILL/5",
                         "--remove-pidfile"],
    }  # fmt: skip


def start_demo_server(work: Path) -> MariaDBServer:
    datadir = work / "mariadb" / "data"
    MariaDBServer.initialize(datadir)
    return MariaDBServer(datadir, work / "mariadb" / "run", port=free_port(), log_bin=True).start()


def create_backup_user(server: MariaDBServer, password: str) -> None:
    server.sql("CREATE USER IF NOT EXISTS 'backup'@'localhost' IDENTIFIED BY %s", (password,))
    server.sql(f"GRANT {BACKUP_GRANTS}, {DUMP_GRANTS} ON *.* TO 'backup'@'localhost'")


def load_sample(server: MariaDBServer, rows: int) -> None:
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.accounts (id INT PRIMARY KEY, owner VARCHAR(64), balance BIGINT) ENGINE=InnoDB")
    server.sql(
        "CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, account INT, amount INT, "
        "note VARCHAR(200), created TIMESTAMP DEFAULT CURRENT_TIMESTAMP, KEY(account)) ENGINE=InnoDB"
    )
    server.sql(
        "INSERT INTO shop.accounts SELECT seq, CONCAT('owner-', seq), 1000 FROM seq_1_to_1000",
        database="shop",
    )
    server.sql(
        "INSERT INTO shop.orders (account, amount, note) SELECT 1 + seq % 1000, seq % 97, "
        f"REPEAT(MD5(seq), 4) FROM seq_1_to_{rows}",
        database="shop",
    )


def write_round(server: MariaDBServer, n: int, rows: int) -> None:
    """Inserts, updates, deletes and DDL, different each round."""
    server.sql(
        "INSERT INTO shop.orders (account, amount, note) SELECT 1 + seq % 1000, seq % 89, "
        f"REPEAT(SHA1(seq + {n}), 3) FROM seq_1_to_{max(rows // 4, 1)}",
        database="shop",
    )
    server.sql("UPDATE shop.accounts SET balance = balance + %s WHERE id %% 7 = %s", (n * 10, n))
    server.sql("DELETE FROM shop.orders WHERE id %% 13 = %s", (n,))
    if n == 1:
        server.sql("CREATE TABLE shop.audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100)) ENGINE=InnoDB")
        server.sql("INSERT INTO shop.audit (what) SELECT CONCAT('event ', seq) FROM seq_1_to_500", database="shop")
    else:
        server.sql("CREATE TABLE shop.audit_archive ENGINE=InnoDB AS SELECT * FROM shop.audit")
        server.sql("DROP TABLE shop.audit")


def ensure_demo_environment(work: Path, *, start_server: bool = True) -> Path:
    """A persistent demo estate for the Dagster UI: config, keys, and (on demand) a running server.

    Idempotent: reuses what exists, starts the server only if it is not already running.
    Returns the config path. Used by `demo-env up` and by the code location on embedded defaults.
    """
    work = work.absolute()
    config_path = work / "config.yaml"
    secrets = work / "secrets"
    if not config_path.exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / MARKER).write_text("created by backup-pipelines demo-env; safe to delete\n")
        secrets.mkdir(mode=0o700, exist_ok=True)
        if not (secrets / "demo.password").exists():
            _write_secret(secrets / "demo.password", generate_key_text()[-24:])
        if not (secrets / "repo.key").exists():
            _write_secret(secrets / "repo.key", generate_key_text())
    if "staging" not in (yaml.safe_load(config_path.read_text()) if config_path.exists() else {}):
        # New, or made by a version without a staging server: (re)write it; secrets are kept.
        server = MariaDBServer(work / "mariadb" / "data", work / "mariadb" / "run")
        config_path.write_text(yaml.safe_dump(demo_config(work, server, staging=True), sort_keys=False))
    if start_server:
        _ensure_server(work)
        _ensure_staging_server(work)
    return config_path


def _ensure_staging_server(work: Path) -> None:
    """The staging target beside the source: an empty server that staging restores overwrite."""

    from .core.config import StagingTarget
    from .core.staging import connect_target

    entry = staging_entry(work)
    server = _staging_server(work)
    if not server.datadir.exists():
        MariaDBServer.initialize(server.datadir)
    server.tmp_dir.mkdir(parents=True, exist_ok=True)  # its start command names it (--tmpdir)
    try:
        server.connect().close()
        return
    except Exception:
        pass
    res = capture(entry["start_command"], what="starting the demo staging server", timeout=120)
    if res.returncode != 0:
        raise ToolError(
            "could not start the demo staging server",
            command=" ".join(entry["start_command"]),
            stderr_tail=res.stderr or server.error_log_tail(),
        )
    try:
        connect_target(StagingTarget.model_validate(entry), timeout=90).close()
    except ToolError as err:
        raise ToolError(
            err.message, stderr_tail=server.error_log_tail(), hint="read the staging server's error log"
        ) from None


def _ensure_server(work: Path) -> MariaDBServer:
    datadir = work / "mariadb" / "data"
    server = MariaDBServer(datadir, work / "mariadb" / "run", log_bin=True)
    fresh = not datadir.exists()
    if fresh:
        MariaDBServer.initialize(datadir)
    try:
        server.connect().close()
    except Exception:
        server.start()
        server.proc = None  # detach: the server outlives this process; `demo-env down` stops it
    # Every time, not only when fresh: an estate made by an older version gets today's grants.
    create_backup_user(server, (work / "secrets" / "demo.password").read_text().strip())
    if fresh:
        load_sample(server, 20000)
    return server


def stop_demo_environment(work: Path) -> bool:
    import signal

    work = work.absolute()
    if (work / "staging" / "run" / "daemon.pid").exists():
        capture(staging_entry(work)["stop_command"], what="stopping the demo staging server", timeout=120)
    pid_file = work / "mariadb" / "run" / "mysqld.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        return False
    for _ in range(600):
        if not pid_file.exists():
            break
        time.sleep(0.1)
    return True


def _fingerprint(server: MariaDBServer) -> dict[str, Any]:
    with server.connect() as conn:
        return {k: v for k, v in table_fingerprints(conn, include_mysql=False).items()}


def _cli() -> str:
    """How to call the CLI from here: the venv's entry point when it is not on PATH."""
    import sys

    beside = Path(sys.executable).parent / "backup-pipelines"
    return "backup-pipelines" if shutil.which("backup-pipelines") == str(beside) or not beside.exists() else str(beside)


def run_demo(work: Path, *, rows: int = 20000, keep: bool = False) -> int:
    work = work.absolute()
    prepare_work_dir(work)
    (work / "secrets").mkdir(mode=0o700)
    password = generate_key_text()[-24:]
    _write_secret(work / "secrets" / "demo.password", password)
    _write_secret(work / "secrets" / "repo.key", generate_key_text())

    print(f"demo: starting a throwaway MariaDB under {work / 'mariadb'}")
    server = start_demo_server(work)
    lines: list[str] = []
    try:
        create_backup_user(server, password)
        load_sample(server, rows)
        cfg_doc = demo_config(work, server)
        (work / "config.yaml").write_text(yaml.safe_dump(cfg_doc, sort_keys=False))
        cfg = parse_config(cfg_doc, str(work / "config.yaml"))
        session = Session.open(cfg)

        expected: dict[str, dict[str, Any]] = {}
        backups = []
        for step in range(3):
            if step:
                write_round(server, step, rows)
            kind = "full" if step == 0 else "incremental"
            m = run_physical_backup(session, DEMO_HOST, kind)
            expected[m.id] = _fingerprint(server)
            backups.append(m)
            print(
                f"demo: {kind:<11} {m.id}  LSN {m.from_lsn}->{m.to_lsn} (redo to {m.last_lsn})  "
                f"{m.source_size_bytes / 2**20:7.1f} MiB streamed, {m.size_bytes / 2**20:6.1f} MiB stored, "
                f"{m.duration_seconds:.1f}s"
            )

        newest = backups[-1]
        target = work / "restored" / "datadir"
        res = restore_chain(session, DEMO_HOST, target)
        restored = MariaDBServer(target, work / "restored" / "run", skip_grant_tables=True)
        with restored:
            got = _fingerprint(restored)
        same = got == expected[newest.id]
        print(
            f"demo: restore     {res.backup_id} (chain of {len(res.chain)}) in {res.seconds:.1f}s; "
            f"per-table checksums {'match' if same else 'DIFFER from'} the source"
        )

        t0 = time.monotonic()
        report = verify_backup(session, DEMO_HOST, raise_on_failure=False)
        print(
            f"demo: verify      {report.backup_id}: {'PASSED' if report.passed else 'FAILED'} "
            f"({len(report.tables)} tables checked, {time.monotonic() - t0:.1f}s)"
        )

        ok = same and report.passed
        lines.append("")
        lines.append("summary")
        lines.append(f"  repository   {cfg.repository.url} (zstd, AES-256-GCM)")
        lines.append(
            f"  backups      1 full + {len(backups) - 1} incrementals, "
            f"{sum(b.size_bytes for b in backups) / 2**20:.1f} MiB stored"
        )
        lines.append(f"  restore      {res.seconds:.1f}s, checksums {'identical' if same else 'DIFFERENT'}")
        lines.append(f"  verification {'passed' if report.passed else 'FAILED: ' + '; '.join(report.problems)}")
        lines.append(
            f"  config       {work / 'config.yaml'} (try: {_cli()} -c {work / 'config.yaml'} list --host {DEMO_HOST})"
        )
        lines.append(f"  result       {'OK' if ok else 'FAILED'}")
        print("\n".join(lines))
        session.close()
        return 0 if ok else 1
    finally:
        server.stop()
        if not keep:
            for sub in ("mariadb", "restored", "tmp"):
                shutil.rmtree(work / sub, ignore_errors=True)
