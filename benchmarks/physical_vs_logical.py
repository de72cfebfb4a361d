"""Physical backup/restore against mysqldump + re-import, on the same data, in one run.

    python -m benchmarks.physical_vs_logical --size-mb 256 --incrementals 1

Starts a throwaway MariaDB, loads --size-mb of InnoDB data, then measures:
  full backup (mariabackup -> zstd -> AES-256-GCM -> file repository), each incremental
  after ~2% of rows change, restore of the whole chain (fetch, prepare, move), and,
  as the peer, mysqldump of the same data and its re-import into a fresh server.
Prints each figure with its ratio to the peer and writes JSON to benchmarks/results/.
Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.config import parse_config
from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.mysqld import MariaDBServer, free_port
from backup_pipelines.core.restore import restore_chain
from backup_pipelines.core.session import Session
from backup_pipelines.core.verify import table_fingerprints

RESULTS = Path(__file__).parent / "results"


def _secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def load(server: MariaDBServer, size_mb: int) -> int:
    """~size_mb of InnoDB data: several tables, ints, strings and text of mixed compressibility."""
    server.sql("CREATE DATABASE bench")
    server.sql("CREATE TABLE bench.events (id BIGINT PRIMARY KEY, account INT, kind VARCHAR(16), "
               "payload VARCHAR(255), body TEXT, created DATETIME, KEY(account), KEY(created)) ENGINE=InnoDB")
    server.sql("CREATE TABLE bench.accounts (id INT PRIMARY KEY, name VARCHAR(64), balance BIGINT) ENGINE=InnoDB")
    server.sql("INSERT INTO accounts SELECT seq, CONCAT('acct-', seq), seq * 7 FROM seq_1_to_100000",
               database="bench")
    batch = 50_000
    n = 0
    while True:
        server.sql(
            "INSERT INTO events SELECT seq, seq % 100000, ELT(1 + seq % 4, 'buy', 'sell', 'hold', 'move'), "
            "CONCAT(MD5(seq), SHA1(seq), MD5(seq * 3)), REPEAT(CONCAT(SHA2(seq, 256), ' lorem ipsum '), 4), "
            f"'2026-01-01' + INTERVAL seq SECOND FROM seq_{n + 1}_to_{n + batch}",
            database="bench",
        )
        n += batch
        size = server.sql("SELECT SUM(data_length + index_length) FROM information_schema.tables "
                          "WHERE table_schema = 'bench'")[0][0]
        if int(size) >= size_mb * 2**20:
            return int(size)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--incrementals", type=int, default=1)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "physical_vs_logical.json"))
    args = ap.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"size_mb_requested": args.size_mb, "incrementals": args.incrementals}
    src = MariaDBServer(work / "src" / "data", work / "src" / "run", port=free_port(), log_bin=True,
                        buffer_pool="1G")
    MariaDBServer.initialize(src.datadir)
    src.start()
    try:
        pw = _secret(work / "pw", "bench-pass")
        src.sql("CREATE USER 'backup'@'localhost' IDENTIFIED BY 'bench-pass'")
        src.sql("GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'backup'@'localhost'")
        t, size = timed(lambda: load(src, args.size_mb))
        results["data_bytes"] = size
        print(f"loaded {size / 2**20:.0f} MiB of InnoDB data in {t:.1f}s")
        doc = {
            "repository": {"url": f"file://{work / 'repo'}", "compression": "zstd",
                           "encryption_key_file": str(_secret(work / "key", generate_key_text()))},
            "hosts": {"bench": {"datadir": str(src.datadir), "socket": str(src.socket), "user": "backup",
                                "password_file": str(pw)}},
            "work_dir": str(work / "tmp"),
        }
        (work / "config.yaml").write_text(yaml.safe_dump(doc))
        session = Session.open(parse_config(doc))

        t_full, full = timed(lambda: run_physical_backup(session, "bench", "full"))
        results["full_backup_seconds"] = round(t_full, 2)
        results["full_stored_bytes"] = full.size_bytes
        results["full_source_bytes"] = full.source_size_bytes
        print(f"full backup: {t_full:.1f}s, {full.source_size_bytes / 2**20:.0f} MiB streamed, "
              f"{full.size_bytes / 2**20:.0f} MiB stored")
        incs = []
        for i in range(args.incrementals):
            src.sql(f"UPDATE bench.events SET kind = 'upd{i}' WHERE id % 50 = {i}")
            src.sql(f"INSERT INTO bench.events SELECT 10000000 * {i + 1} + seq, seq, 'new', MD5(seq), "
                    f"REPEAT('x', 100), NOW() FROM seq_1_to_20000", database="bench")
            t_inc, inc = timed(lambda: run_physical_backup(session, "bench", "incremental"))
            incs.append({"seconds": round(t_inc, 2), "stored_bytes": inc.size_bytes,
                         "source_bytes": inc.source_size_bytes})
            print(f"incremental {i + 1}: {t_inc:.1f}s, {inc.size_bytes / 2**20:.1f} MiB stored")
        results["incrementals_detail"] = incs
        with src.connect() as conn:
            expected = table_fingerprints(conn, include_mysql=False)

        target = work / "restored"
        t_restore, res = timed(lambda: restore_chain(session, "bench", target))
        results["restore_seconds"] = round(t_restore, 2)
        results["restore_phases"] = {"fetch": res.fetch_seconds, "prepare": res.prepare_seconds,
                                     "move": res.copy_back_seconds}
        with MariaDBServer(target, work / "restored-run", skip_grant_tables=True) as r, r.connect() as conn:
            results["restore_identical"] = table_fingerprints(conn, include_mysql=False) == expected
        print(f"restore of full + {args.incrementals}: {t_restore:.1f}s (identical: {results['restore_identical']})")
        shutil.rmtree(target)

        # The peer: mysqldump of the same data, and its re-import into a fresh server.
        dump = work / "dump.sql"
        with open(dump, "wb") as out:
            t_dump, _ = timed(lambda: subprocess.run(
                ["mariadb-dump", f"--socket={src.socket}", "-uroot", "--single-transaction", "--routines",
                 "--events", "--triggers", "--databases", "bench"], stdout=out, check=True))
        results["mysqldump_seconds"] = round(t_dump, 2)
        results["mysqldump_bytes"] = dump.stat().st_size
        dst = MariaDBServer(work / "dst" / "data", work / "dst" / "run", buffer_pool="1G")
        MariaDBServer.initialize(dst.datadir)
        with dst:
            with open(dump, "rb") as inp:
                t_import, _ = timed(lambda: subprocess.run(
                    ["mariadb", f"--socket={dst.socket}", "-uroot"], stdin=inp, check=True))
            with dst.connect() as conn:
                fp = table_fingerprints(conn, include_mysql=False)
        results["reimport_seconds"] = round(t_import, 2)
        results["reimport_identical"] = fp == expected
        print(f"mysqldump: {t_dump:.1f}s ({dump.stat().st_size / 2**20:.0f} MiB); re-import: {t_import:.1f}s")
    finally:
        src.stop()

    logical_restore = results["reimport_seconds"]
    results["ratios"] = {
        "restore_speedup_vs_reimport": round(logical_restore / results["restore_seconds"], 2),
        "full_backup_vs_mysqldump": round(results["full_backup_seconds"] / results["mysqldump_seconds"], 2),
    }
    print()
    print(f"{'measure':<36}{'ours':>10}{'peer':>10}{'ratio':>9}")
    print(f"{'backup (full vs mysqldump), s':<36}{results['full_backup_seconds']:>10.1f}"
          f"{results['mysqldump_seconds']:>10.1f}{results['ratios']['full_backup_vs_mysqldump']:>8.2f}x")
    print(f"{'restore (chain vs re-import), s':<36}{results['restore_seconds']:>10.1f}"
          f"{logical_restore:>10.1f}{results['ratios']['restore_speedup_vs_reimport']:>8.2f}x faster")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
