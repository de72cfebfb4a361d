"""The backup pipeline end to end against its fair floors and against mysqldump, on the same data, in one run.

    python -m benchmarks.physical_vs_logical --size-mb 1024 --incrementals 4 --rounds 3

Starts a throwaway MariaDB, loads --size-mb of InnoDB data of mixed compressibility (about
half of each row is random bytes, the rest text and numbers), then measures, interleaved
over --rounds (median of them), each with its wall time and CPU-seconds (user+sys of the
whole process tree):
  ours:              `backup-pipelines backup full` (mariabackup -> zstd -> AES-256-GCM ->
                     sha256 -> file repository, fsynced)
  same-work floor:   `mariabackup --backup --stream=xbstream | zstd -3 -T<threads> |
                     openssl enc -aes-256-ctr -bufsize 1M | tee FILE | openssl dgst -sha256;
                     sync FILE`: compresses, encrypts, hashes and stores as we do, each stage in
                     its own process, with the fastest raw tools (openssl's AES-NI and SHA-NI
                     code: coreutils' sha256sum has no SHA-NI and was 8x slower here)
  compression floor: `mariabackup --backup --stream=xbstream | zstd -3 -T<threads> > /dev/null`
  tool alone:        `mariabackup --backup --stream=xbstream > /dev/null`
Every floor runs at our compression level and thread count (--level, --threads), and its
command is printed beside its figures. The machine may be shared: the CPU-seconds other
processes used during each run are recorded and printed, and CPU-seconds are the robust
figure when the wall times are noisy.
Then --incrementals incrementals, each after a 15-minute-like change (new rows, a hot range
of updates, a few deletes), the restore of the whole chain (fetch, prepare, move), and as
the peer, mysqldump of the same data and its re-import into a fresh server. Raw numbers go
to benchmarks/results/. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.mysqld import MariaDBServer, free_port
from backup_pipelines.core.verify import table_fingerprints
from benchmarks._measure import add_output_args, finish, redrawn, system_busy, work_dir

CLI = [sys.executable, "-m", "backup_pipelines.cli"]
# openssl's fastest AES-256 stream mode (AES-NI; `enc` has no GCM), 1 MiB buffers; the key from a file.
OPENSSL_CTR = "openssl enc -aes-256-ctr -bufsize 1048576 -pbkdf2 -iter 1"


def _secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def shell(cmd: str, **kw: Any) -> dict[str, float]:
    """Wall and CPU (user+sys of the whole process tree) of a shell pipeline, and what others used meanwhile.

    `others_cpu_seconds` is the machine's busy CPU time during the run minus the pipeline's own
    (the server being backed up counts as "others"): the measure of how shared the machine was.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = system_busy()
    t0 = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, **kw)
    wall = time.monotonic() - t0
    busy = system_busy() - busy0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "others_cpu_seconds": round(busy - cpu, 3)}


def load(server: MariaDBServer, size_mb: int) -> int:
    """~size_mb of InnoDB data of mixed compressibility: about half random bytes, the rest text and ints."""
    server.sql("CREATE DATABASE bench")
    server.sql(
        "CREATE TABLE bench.events (id BIGINT PRIMARY KEY, account INT, kind VARCHAR(16), "
        "payload VARCHAR(255), body TEXT, noise VARBINARY(512), created DATETIME, KEY(account), KEY(created)) "
        "ENGINE=InnoDB"
    )
    server.sql("CREATE TABLE bench.accounts (id INT PRIMARY KEY, name VARCHAR(64), balance BIGINT) ENGINE=InnoDB")
    server.sql("INSERT INTO accounts SELECT seq, CONCAT('acct-', seq), seq * 7 FROM seq_1_to_100000", database="bench")
    batch, n = 100_000, 0
    while True:
        server.sql(
            "INSERT INTO events SELECT seq, seq % 100000, ELT(1 + seq % 4, 'buy', 'sell', 'hold', 'move'), "
            "CONCAT(MD5(seq), SHA1(seq), MD5(seq * 3)), REPEAT(CONCAT(SHA2(seq, 256), ' lorem ipsum '), 4), "
            f"RANDOM_BYTES(400), '2026-01-01' + INTERVAL seq SECOND FROM seq_{n + 1}_to_{n + batch}",
            database="bench",
        )
        n += batch
        size = server.sql(
            "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = 'bench'"
        )[0][0]
        if int(size) >= size_mb * 2**20:
            server.sql("SET GLOBAL innodb_max_dirty_pages_pct = 0")  # a checkpoint, as a busy server has
            time.sleep(2)
            return int(size)


def change(server: MariaDBServer, i: int) -> None:
    """What 15 minutes of a busy OLTP database look like: inserts, a hot range of updates, deletes."""
    top = server.sql("SELECT MAX(id) FROM bench.events")[0][0]
    server.sql(
        f"INSERT INTO events SELECT {top} + seq, seq % 100000, 'new', MD5(seq + {i}), "
        f"REPEAT(SHA1(seq + {i}), 6), RANDOM_BYTES(400), NOW() FROM seq_1_to_30000",
        database="bench",
    )
    lo = 1 + i * 50_000
    server.sql(
        f"UPDATE bench.events SET kind = 'upd{i}', payload = MD5(payload) WHERE id BETWEEN {lo} AND {lo + 20000}"
    )
    server.sql(f"UPDATE bench.accounts SET balance = balance + {i} WHERE id % 97 = {i}")
    server.sql(f"DELETE FROM bench.events WHERE id BETWEEN {lo + 30000} AND {lo + 31000}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--size-mb", type=int, default=256, help="InnoDB data to load (default 256; the README's figures use 1024+)"
    )
    ap.add_argument("--level", type=int, default=3, help="zstd level, ours and the floors'")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="zstd threads, ours and the floors'")
    ap.add_argument("--incrementals", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--skip-logical",
        action="store_true",
        help="skip mysqldump, re-import and our logical dumps; keep their figures from the previous --out",
    )
    add_output_args(ap, "physical_vs_logical")
    args = ap.parse_args()
    if redrawn(args, chart):
        return

    work = work_dir(args, "bp-bench-")
    res: dict[str, Any] = {
        "size_mb_requested": args.size_mb,
        "incrementals": args.incrementals,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "level": args.level,
        "threads": args.threads,
    }
    src = MariaDBServer(work / "src" / "data", work / "src" / "run", port=free_port(), log_bin=True, buffer_pool="2G")
    MariaDBServer.initialize(src.datadir)
    src.start()
    try:
        pw = _secret(work / "pw", "bench-pass")
        src.sql("CREATE USER 'backup'@'localhost' IDENTIFIED BY 'bench-pass'")
        src.sql("GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'backup'@'localhost'")
        t0 = time.monotonic()
        res["data_bytes"] = load(src, args.size_mb)
        print(f"loaded {res['data_bytes'] / 2**20:.0f} MiB of InnoDB data in {time.monotonic() - t0:.0f}s")
        cnf = _secret(work / "client.cnf", "[client]\nuser=backup\npassword=bench-pass")
        cfg = {
            "repository": {
                "url": f"file://{work / 'repo'}",
                "compression": "zstd",
                "compression_level": args.level,
                "compression_threads": args.threads,
                "encryption_key_file": str(_secret(work / "key", generate_key_text())),
            },
            "hosts": {
                "bench": {
                    "datadir": str(src.datadir),
                    "socket": str(src.socket),
                    "user": "backup",
                    "password_file": str(pw),
                }
            },
            "work_dir": str(work / "tmp"),
        }
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        mb = (
            f"mariabackup --defaults-extra-file={cnf} --backup --stream=xbstream --datadir={src.datadir} "
            f"--socket={src.socket} --target-dir={work / 'mbtmp'}"
        )
        (work / "mbtmp").mkdir()
        # The floors' encryption key: a file, never argv (the pass phrase is hashed once: -iter 1).
        floor_pass = _secret(work / "floor-pass", generate_key_text())
        zstd = f"zstd -q -{args.level} -T{args.threads}"
        floor_out = work / "floor.out"
        commands = {
            "ours": f"backup-pipelines -c CONFIG backup full (zstd level {args.level}, {args.threads} threads)",
            "same-work floor": f"mariabackup --backup --stream=xbstream | {zstd} | {OPENSSL_CTR} "
            "-pass file:KEY | tee FILE | openssl dgst -sha256; sync FILE",
            "compression floor": f"mariabackup --backup --stream=xbstream | {zstd} > /dev/null",
            "tool alone": "mariabackup --backup --stream=xbstream > /dev/null",
        }
        scripts = {
            "ours": f"{' '.join(CLI)} -c {config} backup full --host bench --json > {work / 'full.json'}",
            "same-work floor": f"{mb} 2>/dev/null | {zstd} | {OPENSSL_CTR} -pass file:{floor_pass} "
            f"| tee {floor_out} | openssl dgst -sha256 > /dev/null && sync {floor_out}",
            "compression floor": f"{mb} 2>/dev/null | {zstd} > /dev/null",
            "tool alone": f"{mb} 2>/dev/null > /dev/null",
        }
        res["full_commands"] = commands

        # Full backups, interleaved: ours and each floor in turn, every round.
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in scripts}
        for r in range(args.rounds):
            for name, script in scripts.items():
                os.sync()  # the previous run's writeback is not this one's cost
                rows[name].append(shell(script))
                floor_out.unlink(missing_ok=True)
            print(
                f"round {r + 1}: "
                + ", ".join(f"{k} {v[-1]['seconds']:.1f}s/{v[-1]['cpu_seconds']:.1f} CPU-s" for k, v in rows.items())
                + f" (others used {statistics.mean(v[-1]['others_cpu_seconds'] for v in rows.values()):.1f}"
                " CPU-s per run)",
                flush=True,
            )
        full = json.loads((work / "full.json").read_text())
        res["full"] = {
            k: {
                "median_seconds": statistics.median(x["seconds"] for x in v),
                "median_cpu_seconds": statistics.median(x["cpu_seconds"] for x in v),
                "median_others_cpu_seconds": statistics.median(x["others_cpu_seconds"] for x in v),
                "command": commands[k],
                "runs": v,
            }
            for k, v in rows.items()
        }
        res["full_stored_bytes"] = full["size_bytes"]
        res["full_source_bytes"] = full["source_size_bytes"]

        incs = []
        for i in range(args.incrementals):
            change(src, i)
            m = shell(f"{' '.join(CLI)} -c {config} backup incremental --host bench --json > {work / 'inc.json'}")
            inc = json.loads((work / "inc.json").read_text())
            m.update(stored_bytes=inc["size_bytes"], source_bytes=inc["source_size_bytes"])
            incs.append(m)
            print(
                f"incremental {i + 1}: {m['seconds']:.1f}s, {inc['source_size_bytes'] / 2**20:.0f} MiB streamed, "
                f"{inc['size_bytes'] / 2**20:.1f} MiB stored"
            )
        res["incrementals_detail"] = incs
        with src.connect() as conn:
            expected = table_fingerprints(conn, include_mysql=False)

        target = work / "restored"
        r = shell(
            f"{' '.join(CLI)} -c {config} restore --host bench --target-datadir {target} --json "
            f"> {work / 'restore.json'}"
        )
        rj = json.loads((work / "restore.json").read_text())
        res["restore"] = {
            **r,
            "chain": len(rj["chain"]),
            "phases": {"fetch": rj["fetch_seconds"], "prepare": rj["prepare_seconds"], "move": rj["copy_back_seconds"]},
        }
        with MariaDBServer(target, work / "restored-run", skip_grant_tables=True) as rs, rs.connect() as conn:
            res["restore_identical"] = table_fingerprints(conn, include_mysql=False) == expected
        print(f"restore of full + {args.incrementals}: {r['seconds']:.1f}s (identical: {res['restore_identical']})")
        shutil.rmtree(target)

        if not args.skip_logical:
            logical(src, work, cfg, expected, res)
        else:  # the logical figures of the previous run in --out, marked as such
            prev = json.loads(Path(args.out).read_text())
            for k in ("mysqldump", "reimport", "reimport_identical", "dumps"):
                res[k] = prev[k]
            res["logical_from_previous_run"] = True
            print(f"logical dumps and re-import: not run; the figures below are the previous run's in {args.out}")
    finally:
        src.stop()

    f = res["full"]
    o = f["ours"]
    res["ratios"] = {
        **{
            f"full_vs_{k.replace(' ', '_').replace('-', '_')}": {
                "wall": round(o["median_seconds"] / f[k]["median_seconds"], 3),
                "cpu": round(o["median_cpu_seconds"] / f[k]["median_cpu_seconds"], 3),
            }
            for k in f
            if k != "ours"
        },
        # Interleaved rounds share their conditions: the median of each round's own ratio is the
        # steadier figure on a shared machine.
        **{
            f"full_vs_{k.replace(' ', '_').replace('-', '_')}_per_round": {
                "wall": round(
                    statistics.median(
                        a["seconds"] / b["seconds"] for a, b in zip(o["runs"], f[k]["runs"], strict=True)
                    ),
                    3,
                ),
                "cpu": round(
                    statistics.median(
                        a["cpu_seconds"] / b["cpu_seconds"] for a, b in zip(o["runs"], f[k]["runs"], strict=True)
                    ),
                    3,
                ),
            }
            for k in f
            if k != "ours"
        },
        "restore_speedup_vs_reimport": round(res["reimport"]["seconds"] / res["restore"]["seconds"], 2),
    }
    others = statistics.median(x["median_others_cpu_seconds"] for x in f.values())
    res["busy"] = others > 0.25 * o["median_seconds"]
    print(
        f"\nfull backup of {res['data_bytes'] / 2**20:.0f} MiB, median of {args.rounds} interleaved rounds; zstd level "
        f"{args.level}, {args.threads} threads everywhere; {res['cpus']} cores, other processes used a median "
        f"{others:.1f} CPU-s per run (the machine was {'busy' if others > 0.25 * o['median_seconds'] else 'quiet'})"
    )
    print(f"{'':<18}{'wall s':>8}{'CPU-s':>8}{'ours/wall':>10}{'ours/CPU':>10}{'per round':>14}  command")
    for k, v in f.items():
        rk = f"full_vs_{k.replace(' ', '_').replace('-', '_')}"
        rw, rc, pr = "", "", ""
        if k != "ours":
            rr = res["ratios"][rk]
            p = res["ratios"][rk + "_per_round"]
            rw, rc, pr = f"{rr['wall']:.2f}x", f"{rr['cpu']:.2f}x", f"{p['wall']:.2f}x/{p['cpu']:.2f}x"
        print(
            f"{k:<18}{v['median_seconds']:>8.2f}{v['median_cpu_seconds']:>8.2f}{rw:>10}{rc:>10}{pr:>14}  {v['command']}"
        )
    print()
    print(f"{'measure':<50}{'ours':>9}{'peer':>9}{'ratio':>15}")
    if res.get("logical_from_previous_run"):
        print(
            "(the re-import and the dumps below are an earlier run's, on other data and load: not ratios of this run)"
        )
    for label, ours, peer, ratio in (
        (
            f"restore full+{args.incrementals} vs SQL re-import, s",
            res["restore"]["seconds"],
            res["reimport"]["seconds"],
            f"{res['ratios']['restore_speedup_vs_reimport']:.1f}x faster",
        ),
        *[
            (
                f"{e}: dump vs plain mysqldump, s",
                v["dump"]["seconds"],
                res["mysqldump"]["seconds"],
                f"{v['dump']['seconds'] / res['mysqldump']['seconds']:.2f}x",
            )
            for e, v in res["dumps"].items()
        ],
        *[
            (
                f"{e}: restore-dump vs plain re-import, s",
                v["restore_dump"]["seconds"],
                res["reimport"]["seconds"],
                f"{v['restore_dump']['seconds'] / res['reimport']['seconds']:.2f}x",
            )
            for e, v in res["dumps"].items()
        ],
    ):
        print(f"{label:<50}{ours:>9.1f}{peer:>9.1f}{ratio:>15}")
    finish(args, res, chart)
    shutil.rmtree(work, ignore_errors=True)


def logical(src: MariaDBServer, work: Path, cfg: dict[str, Any], expected: Any, res: dict[str, Any]) -> None:
    """The peer: mysqldump of the same data and its re-import; then our logical dumps and their loads."""
    # The peer: mysqldump of the same data, and its re-import into a fresh server.
    dump = work / "dump.sql"
    res["mysqldump"] = shell(
        f"mariadb-dump --socket={src.socket} -uroot --single-transaction --routines "
        f"--events --triggers --databases bench > {dump}"
    )
    res["mysqldump"]["bytes"] = dump.stat().st_size
    dst = MariaDBServer(work / "dst" / "data", work / "dst" / "run", buffer_pool="2G")
    MariaDBServer.initialize(dst.datadir)
    with dst:
        res["reimport"] = shell(f"mariadb --socket={dst.socket} -uroot < {dump}")
        with dst.connect() as conn:
            res["reimport_identical"] = table_fingerprints(conn, include_mysql=False) == expected
    print(f"mysqldump: {res['mysqldump']['seconds']:.1f}s; re-import: {res['reimport']['seconds']:.1f}s")

    # Our logical dumps (compressed, encrypted, catalogued) with both engines, and their loads.
    src.sql("GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO 'backup'@'localhost'")
    res["dumps"] = {}
    for engine in ("mysqldump", "mydumper"):
        tgt = MariaDBServer(work / f"load-{engine}" / "data", work / f"load-{engine}" / "run", buffer_pool="2G")
        MariaDBServer.initialize(tgt.datadir)
        variant = {
            **cfg,
            "hosts": {"bench": {**cfg["hosts"]["bench"], "dump": {"engine": engine}}},
            "staging": {
                "load": {
                    "staging": True,
                    "datadir": str(tgt.datadir),
                    "socket": str(tgt.socket),
                    "user": "root",
                    "stop_command": ["true"],
                    "start_command": ["true"],
                }
            },
        }
        vpath = work / f"config-{engine}.yaml"
        vpath.write_text(yaml.safe_dump(variant))
        d = shell(f"{' '.join(CLI)} -c {vpath} backup dump --host bench --json > {work / 'dump.json'}")
        dj = json.loads((work / "dump.json").read_text())
        with tgt:
            ld = shell(
                f"{' '.join(CLI)} -c {vpath} restore-dump --host bench --target-host load --json > {work / 'load.json'}"
            )
            with tgt.connect() as conn:
                same = table_fingerprints(conn, include_mysql=False) == expected
        res["dumps"][engine] = {
            "dump": {**d, "stored_bytes": dj["size_bytes"], "sql_bytes": dj["source_size_bytes"]},
            "restore_dump": ld,
            "identical": same,
        }
        print(
            f"ours, {engine}: dump {d['seconds']:.1f}s ({dj['size_bytes'] / 2**20:.0f} MiB stored), "
            f"restore-dump {ld['seconds']:.1f}s (identical: {same})"
        )


def chart(res: dict[str, Any], path: Path) -> None:
    """Four panels: full backup against its floors, incrementals, restore against re-import, dumps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = res["full"]
    fig, axes = plt.subplots(1, 4, figsize=(21, 5.2), gridspec_kw={"width_ratios": [1, 1, 0.8, 1.5]})
    ours, peer, floor = "#d62728", "#1f77b4", "#7f7f7f"

    def bars(ax: Any, labels: list[str], values: list[float], colors: list[str], title: str) -> None:
        drawn = ax.bar(labels, values, color=colors)
        for b, v in zip(drawn, values, strict=True):
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("seconds (lower is better)")
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)

    sw = res["ratios"]["full_vs_same_work_floor"]
    bars(
        axes[0],
        [
            "ours: mariabackup\n-> zstd -> AES-GCM\n-> sha256 -> repo",
            "same-work floor\n| zstd | openssl\n| tee | sha256sum",
            "compression floor\n| zstd > /dev/null",
            "mariabackup\n> /dev/null",
        ],
        [f[k]["median_seconds"] for k in ("ours", "same-work floor", "compression floor", "tool alone")],
        [ours, peer, peer, floor],
        f"full backup, median of {res['rounds']}, zstd -{res['level']} -T{res['threads']}\n"
        f"{sw['wall']:.2f}x wall, {sw['cpu']:.2f}x CPU of the same-work floor",
    )
    incs = res["incrementals_detail"]
    bars(
        axes[1],
        [f"inc {i + 1}\n{x['stored_bytes'] / 2**20:.0f} MiB stored" for i, x in enumerate(incs)],
        [x["seconds"] for x in incs],
        [ours] * len(incs),
        "incremental backups",
    )
    bars(
        axes[2],
        [f"ours: restore\nfull + {len(incs)} incrementals", "mysqldump\nre-import"],
        [res["restore"]["seconds"], res["reimport"]["seconds"]],
        [ours, peer],
        "restore; the re-import is an earlier run's"
        if res.get("logical_from_previous_run")
        else f"restore: {res['ratios']['restore_speedup_vs_reimport']:.1f}x faster than SQL re-import",
    )
    labels, values, colors = ["mysqldump\n(plain)"], [res["mysqldump"]["seconds"]], [peer]
    for engine, v in res["dumps"].items():
        labels += [f"ours: dump\n{engine}", f"ours: load\n{engine}"]
        values += [v["dump"]["seconds"], v["restore_dump"]["seconds"]]
        colors += [ours, ours]
    labels.append("re-import\n(plain)")
    values.append(res["reimport"]["seconds"])
    colors.append(peer)
    bars(
        axes[3],
        labels,
        values,
        colors,
        "logical dumps and their loads" + (" (an earlier run's)" if res.get("logical_from_previous_run") else ""),
    )
    fig.suptitle(
        f"backup-pipelines on {res['data_bytes'] / 2**20:.0f} MiB of InnoDB data, {res['cpus']} cores, one run"
        f"{' on a busy machine' if res.get('busy') else ''}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
