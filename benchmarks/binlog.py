"""Point-in-time recovery: RPO lag of `binlog stream` and of `binlog push` every minute, and replay speed.

    python -m benchmarks.binlog                       # 120 s of writes per mode, push every 60 s, 1 GiB replay
    python -m benchmarks.binlog --seconds 20 --push-every 10 --binlog-mib 64   # a dev-sized run

RPO lag: a writer commits one small transaction every 0.2 s on a throwaway MariaDB and notes
(commit time, binlog file, end position) from SHOW MASTER STATUS; a poller lists the
repository every 0.25 s and notes when a segment record reaching that position appeared.
Lag = that moment minus the commit (resolution 0.25 s). Goal: p99 < 10 s with stream.

Replay: after a full backup, `--binlog-mib` of ROW binlog is written; `restore --at` the
latest point replays all of it (its replay_seconds include starting and stopping the replay
server). The peer is the same by hand on the same files into a second restore of the same
backup: `mariadb-binlog --start-position=P FILES | mariadb`, timed for the pipe alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.binlog.index import SegmentRecord
from backup_pipelines.core.binlog.push import push
from backup_pipelines.core.binlog.replay import restore_point
from backup_pipelines.core.config import load_config
from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.mysqld import MariaDBServer, free_port
from backup_pipelines.core.restore import restore_chain
from backup_pipelines.core.session import Session

MiB = 1024 * 1024
RESULTS = Path(__file__).parent / "results"


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def setup(root: Path) -> tuple[MariaDBServer, Path]:
    MariaDBServer.initialize(root / "data")
    srv = MariaDBServer(root / "data", Path(tempfile.mkdtemp(prefix="bp-bench-")), port=free_port(), log_bin=True)
    srv.start()
    srv.sql("CREATE USER 'backup'@'localhost' IDENTIFIED BY 'bench-pw'")
    srv.sql("GRANT RELOAD, PROCESS, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO 'backup'@'localhost'")
    srv.sql("CREATE DATABASE bench")
    srv.sql("CREATE TABLE bench.ticks (id INT AUTO_INCREMENT PRIMARY KEY, t DOUBLE, pad VARCHAR(100))")
    srv.sql("CREATE TABLE bench.bulk (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000))")
    doc = {
        "repository": {
            "url": f"file://{root / 'repository'}",
            "compression": "zstd",
            "encryption_key_file": str(_secret(root / "repo.key", generate_key_text())),
        },
        "hosts": {
            "db1": {
                "engine": "mariabackup",
                "datadir": str(srv.datadir),
                "socket": str(srv.socket),
                "user": "backup",
                "password_file": str(_secret(root / "pw", "bench-pw")),
            }
        },
        "work_dir": str(root / "work"),
    }
    (root / "config.yaml").write_text(yaml.safe_dump(doc))
    return srv, root / "config.yaml"


class Lag:
    """The writer and the repository poller of one RPO measurement."""

    def __init__(self, srv: MariaDBServer, session: Session) -> None:
        self.srv, self.session = srv, session
        self.commits: list[tuple[float, str, int]] = []
        self.seen: dict[str, list[tuple[float, int]]] = {}  # file -> [(observed at, end)]
        self.stop = threading.Event()

    def writer(self) -> None:
        with self.srv.connect("bench", autocommit=False) as conn, conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute("INSERT INTO ticks (t, pad) VALUES (%s, REPEAT('p', 80))", (time.time(),))
                conn.commit()
                t = time.time()
                cur.execute("SHOW MASTER STATUS")
                f, pos = cur.fetchone()[:2]
                self.commits.append((t, str(f), int(pos)))
                time.sleep(0.2)

    def poller(self) -> None:
        repo, known = self.session.repo, set()
        last_round = False
        while not last_round:
            last_round = self.stop.is_set()  # one more listing after the stop: the final push's records
            now = time.time()
            for info in repo.list("hosts/db1/binlogs/"):
                if info.key.endswith(".json") and info.key not in known:
                    known.add(info.key)
                    rec = SegmentRecord.model_validate(self.session.catalog.open_json(repo.get_bytes(info.key), "r"))
                    self.seen.setdefault(rec.file, []).append((now, rec.end))
            time.sleep(0.25)

    def lags(self) -> list[float]:
        out = []
        for t, f, pos in self.commits:
            arrivals = [at for at, end in self.seen.get(f, []) if end >= pos]
            if arrivals:
                out.append(max(0.0, min(arrivals) - t))
        return out


def _stats(lags: list[float], commits: int) -> dict[str, Any]:
    lags = sorted(lags)
    if not lags:
        return {"commits": commits, "archived": 0}
    p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
    return {
        "commits": commits,
        "archived": len(lags),
        "median_s": round(statistics.median(lags), 2),
        "p99_s": round(p99, 2),
        "max_s": round(lags[-1], 2),
    }


def rpo_stream(srv: MariaDBServer, config: Path, seconds: float, interval: float) -> dict[str, Any]:
    session = Session.open(load_config(config))
    lag = Lag(srv, session)
    cmd = [sys.executable, "-m", "backup_pipelines.cli", "-c", str(config), "binlog", "stream", "--host", "db1"]
    cmd += ["--interval", str(interval)]
    proc = subprocess.Popen(cmd)
    threads = [threading.Thread(target=lag.writer), threading.Thread(target=lag.poller)]
    time.sleep(2)
    for t in threads:
        t.start()
    time.sleep(seconds)
    lag.stop.set()
    for t in threads:
        t.join()
    proc.terminate()
    proc.wait(60)
    return {"command": " ".join(cmd[2:]), **_stats(lag.lags(), len(lag.commits))}


def rpo_push(srv: MariaDBServer, config: Path, seconds: float, every: float) -> dict[str, Any]:
    session = Session.open(load_config(config))
    lag = Lag(srv, session)
    threads = [threading.Thread(target=lag.writer), threading.Thread(target=lag.poller)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(every)
        push(session, "db1")
    lag.stop.set()
    for t in threads:
        t.join()
    return {"command": f"binlog push --host db1, every {every:.0f} s", **_stats(lag.lags(), len(lag.commits))}


def replay(srv: MariaDBServer, config: Path, root: Path, mib: int) -> dict[str, Any]:
    session = Session.open(load_config(config))
    full = run_physical_backup(session, "db1", "full")
    assert full.binlog is not None
    per_txn = 2000  # rows of ~520 bytes: ~1 MiB per transaction
    for _ in range(max(1, mib)):
        srv.sql(f"INSERT INTO bench.bulk (pad) SELECT REPEAT(MD5(seq), 16) FROM bench.seq_1_to_{per_txn}")
    push(session, "db1")
    files = [r[0] for r in srv.sql("SHOW BINARY LOGS")]
    files = files[files.index(full.binlog.file) :]
    paths = [srv.datadir / f for f in files]
    replayed = sum(p.stat().st_size for p in paths) - full.binlog.position
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    time.sleep(2.2)
    push(session, "db1")  # the heartbeat vouches for `at`
    ours = restore_point(session, "db1", root / "pitr", at=at)
    ours_s = ours.timings["replay_seconds"]

    peer_dir = root / "peer"
    restore_chain(session, "db1", peer_dir, backup_id=full.id)
    run = Path(tempfile.mkdtemp(prefix="bp-bench-peer-"))
    peer = MariaDBServer(peer_dir, run, skip_grant_tables=True)
    t0 = time.monotonic()
    peer.start()
    t1 = time.monotonic()
    producer = ["mariadb-binlog", f"--start-position={full.binlog.position}", *map(str, paths)]
    consumer = ["mariadb", "--no-defaults", f"--socket={peer.socket}", "--user=root", "--binary-mode"]
    p1 = subprocess.Popen(producer, stdout=subprocess.PIPE)
    p2 = subprocess.Popen(consumer, stdin=p1.stdout)
    assert p1.stdout is not None
    p1.stdout.close()
    assert p2.wait() == 0 and p1.wait() == 0
    t2 = time.monotonic()
    peer.stop()
    t3 = time.monotonic()
    shutil.rmtree(run, ignore_errors=True)
    rows = srv.sql("SELECT COUNT(*) FROM bench.bulk")[0][0]
    return {
        "binlog_mib": round(replayed / MiB, 1),
        "rows": rows,
        "ours": {
            "command": f"backup-pipelines restore --host db1 --target-datadir DIR --at {at}",
            "replay_seconds": ours_s,
            "mib_per_s": round(replayed / MiB / ours_s, 1),
            "transactions": ours.binlog["transactions"] if ours.binlog else None,
        },
        "peer": {
            "command": f"{' '.join(producer[:2])} FILES | {' '.join(consumer[:1])} --binary-mode",
            "pipe_seconds": round(t2 - t1, 2),
            "with_server_start_stop_seconds": round((t1 - t0) + (t2 - t1) + (t3 - t2), 2),
            "mib_per_s": round(replayed / MiB / (t2 - t1), 1),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120, help="write-load seconds per RPO mode (default 120)")
    ap.add_argument("--interval", type=float, default=2.0, help="binlog stream --interval (default 2)")
    ap.add_argument("--push-every", type=float, default=60, help="seconds between pushes (default 60)")
    ap.add_argument("--binlog-mib", type=int, default=1024, help="binlog to replay after the backup (default 1024)")
    ap.add_argument("--skip-rpo", action="store_true")
    ap.add_argument("--skip-replay", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bp-bench-binlog-"))
    srv, config = setup(root)
    out: dict[str, Any] = {"args": vars(args)}
    try:
        if not args.skip_rpo:
            out["rpo_stream"] = rpo_stream(srv, config, args.seconds, args.interval)
            print(f"RPO with stream:  {json.dumps(out['rpo_stream'])}", flush=True)
            out["rpo_push"] = rpo_push(srv, config, args.seconds, args.push_every)
            print(f"RPO with push:    {json.dumps(out['rpo_push'])}", flush=True)
            s, p = out["rpo_stream"], out["rpo_push"]
            if s.get("p99_s") is not None and p.get("p99_s"):
                print(f"stream p99 / push p99 = {s['p99_s'] / p['p99_s']:.3f} (goal: stream p99 < 10 s)")
        if not args.skip_replay:
            out["replay"] = r = replay(srv, config, root, args.binlog_mib)
            print(f"replay of {r['binlog_mib']} MiB of binlog:", flush=True)
            print(
                f"  ours  {r['ours']['mib_per_s']:>7} MiB/s  ({r['ours']['replay_seconds']} s)  {r['ours']['command']}"
            )
            print(
                f"  peer  {r['peer']['mib_per_s']:>7} MiB/s  ({r['peer']['pipe_seconds']} s pipe, "
                f"{r['peer']['with_server_start_stop_seconds']} s with server start/stop)  {r['peer']['command']}"
            )
            print(f"  ours / peer = {r['ours']['mib_per_s'] / r['peer']['mib_per_s']:.2f}")
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("binlog.json" if args.binlog_mib >= 1024 and args.seconds >= 120 else "binlog-dev.json")
    previous = json.loads(path.read_text()) if path.exists() else {}
    # A run that skipped a part keeps the earlier figures for it (each part names its own command).
    path.write_text(json.dumps({**previous, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
