"""Restore of a full + N incrementals against its floor: the raw tools doing the same work, in one run.

    python -m benchmarks.restore_floor --size-mb 256 --incrementals 4 --rounds 3

Starts a throwaway MariaDB, loads --size-mb of InnoDB data of mixed compressibility (the data
set-up of benchmarks/physical_vs_logical.py), and takes one full + --incrementals incrementals
with our CLI into an encrypted file repository, each after a 15-minute-like change. No raw tool
decrypts our AES-256-GCM chunk framing, so before the rounds (not timed) each stored object is
decrypted once into a plain copy, still our zstd stream: the floor reads the same chain's bytes
less the encryption layer, and ours decrypts on top of the floor's work. Then, interleaved over --rounds:
  ours:  `backup-pipelines restore --host H --target-datadir DIR` (sha256 of every object
         checked against the catalog, AES-GCM decryption, zstd, mbstream, prepare, move-back)
  extract floors: per link `zstd -dcq < OBJ | mbstream -x -C LINK`, on two schedules: every
         link at once (floor-all) and the base with the incrementals one after another beside
         it (floor-2, ours); `mariabackup --prepare --use-memory=M` of the base as soon as it is
         extracted and `--prepare --incremental-dir=LINK` as soon as each link is; then
         `mariabackup --move-back` into the target datadir. The fair floor is the faster one.
  same-work floor: floor-2 on a copy re-encrypted with `openssl enc -aes-256-ctr` (also not
         timed), per link `tee FIFO < OBJ | openssl enc -d -aes-256-ctr | zstd -dcq | mbstream -x`
         with `openssl dgst -sha256 < FIFO` compared with the copy's sum: it decrypts and checks
         every stored byte as ours does, with the raw tools (openssl's SHA-NI and AES-NI code).
Both prepare at the same --use-memory. Wall time and CPU-seconds (user+sys of the process
tree) of each, the ratios (median of the per-round ratios, and of the medians), the phases
(fetch+extract, prepare after the last link is on disk, move) of both, the load average and
the CPU other processes used meanwhile, and whether each restored datadir has the source's
table checksums (each is started and checked in the first round). Raw numbers and a chart go
to benchmarks/results/. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from backup_pipelines.core.codec import Codec, decode_stages
from backup_pipelines.core.config import load_config
from backup_pipelines.core.crypto import SCHEME, generate_key_text
from backup_pipelines.core.mysqld import MariaDBServer, free_port
from backup_pipelines.core.session import load_keyring
from backup_pipelines.core.verify import table_fingerprints
from benchmarks._measure import add_output_args, finish, redrawn, work_dir
from benchmarks.physical_vs_logical import OPENSSL_CTR, _secret, change, load, shell

CLI = [sys.executable, "-m", "backup_pipelines.cli"]
MILESTONES = ("fetched", "prepared", "moved")


def lanes(n: int, jobs: int) -> list[list[int]]:
    """Which links each concurrent extractor takes, in turn: the base alone, the rest shared by jobs - 1.

    jobs 0: every link its own extractor, all at once. jobs 2 is our restore's schedule (two fetch
    workers: the base, the critical path, in one; the incrementals one after another in the other).
    """
    if jobs <= 0 or jobs >= n:
        return [[i] for i in range(n)]
    rest = max(1, jobs - 1)
    return [[0], *[list(range(1 + k, n, rest)) for k in range(rest)]]


def floor_script(
    links: list[dict[str, Any]],
    work: Path,
    target: Path,
    memory: str,
    parallel: int,
    jobs: int,
    same_work: bool,
    key: Path | None = None,
) -> str:
    """The floor as one bash script: links extracted by `lanes(jobs)`, each prepare step as soon as its link is.

    Each extracted link leaves a done-file the prepare loop polls for (every 20 ms). Each
    milestone (all links extracted, prepare done, move done) appends a timestamp to work/marks
    so the floor's phases line up with those our restore reports.
    """
    q = shlex.quote
    marks = work / "marks"
    lines = ["set -e -o pipefail", f": > {q(str(marks))}", f"echo start $(date +%s.%N) >> {q(str(marks))}"]
    dirs = [work / f"{i:03d}-{link['kind']}" for i, link in enumerate(links)]
    failed = q(str(work / "failed"))

    def extract(i: int) -> str:
        link, d = links[i], dirs[i]
        s, fifo = work / f"{i:03d}.sha256", work / f"{i:03d}.fifo"
        mbstream = f"mbstream -x{f' -p {parallel}' if parallel > 1 else ''} -C {q(str(d))}"
        if not same_work:
            return (
                f"mkdir -p {q(str(d))} && zstd -dcq < {q(link['plain_path'])} | {mbstream} "
                f"&& touch {q(str(work / f'done{i}'))}"
            )
        assert key is not None
        return (
            f"mkdir -p {q(str(d))} && mkfifo {q(str(fifo))} "
            f"&& {{ openssl dgst -sha256 -r < {q(str(fifo))} > {q(str(s))} & H=$!; }} "
            f"&& tee {q(str(fifo))} < {q(link['ctr_path'])} | {OPENSSL_CTR} -d -pass file:{q(str(key))} "
            f"| zstd -dcq | {mbstream} "
            f"&& wait $H && test \"$(cut -d' ' -f1 {q(str(s))})\" = {link['ctr_sha256']} "
            f"&& touch {q(str(work / f'done{i}'))}"
        )

    for lane in lanes(len(links), jobs):
        lines.append(f"( {' && '.join(extract(i) for i in lane)} ) || touch {failed} &")
    prep = f"mariabackup --no-defaults --prepare --use-memory={memory} --target-dir={q(str(dirs[0]))}"
    for i, d in enumerate(dirs):
        lines.append(f"until [ -e {q(str(work / f'done{i}'))} ]; do [ ! -e {failed} ] || exit 1; sleep 0.02; done")
        if i == len(dirs) - 1:
            lines.append(f"echo fetched $(date +%s.%N) >> {q(str(marks))}")
        lines.append(f"{prep}{'' if i == 0 else f' --incremental-dir={q(str(d))}'} 2> {q(str(work / f'prep{i}.log'))}")
    lines.append(f"echo prepared $(date +%s.%N) >> {q(str(marks))}")
    lines.append(
        f"mariabackup --no-defaults --move-back --target-dir={q(str(dirs[0]))} --datadir={q(str(target))} "
        f"2> {q(str(work / 'move.log'))}"
    )
    lines.append(f"echo moved $(date +%s.%N) >> {q(str(marks))}")
    return "\n".join(lines) + "\n"


class _FileSink:
    def __init__(self, path: Path) -> None:
        self.f = path.open("wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.f.write(data)

    def finish(self) -> None:
        self.f.close()


def plain_copy(config: Path, obj: Path, dest: Path) -> dict[str, Any]:
    """The floor's input: the stored object with only our AES-GCM layer undone (still our zstd stream)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    keyring = load_keyring(load_config(config))
    sink = _FileSink(dest)
    head = decode_stages(Codec("none", SCHEME), keyring, sink, what=f"object {obj}")
    with obj.open("rb") as f:
        while chunk := f.read(1 << 20):
            head.write(chunk)
    head.finish()
    sink.finish()
    return {"plain_path": str(dest), "plain_bytes": sink.size, "plain_sha256": sink.digest.hexdigest()}


def ctr_copy(plain: Path, key: Path) -> dict[str, Any]:
    """The same-work floor's input: the plain copy encrypted by openssl, and the sha256 of that."""
    dest = plain.with_suffix(".ctr")
    q = shlex.quote
    subprocess.run(f"{OPENSSL_CTR} -pass file:{q(str(key))} < {q(str(plain))} > {q(str(dest))}", shell=True, check=True)
    digest = hashlib.sha256()
    with dest.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"ctr_path": str(dest), "ctr_sha256": digest.hexdigest()}


def floor_phases(marks: Path) -> dict[str, float]:
    t = {k: float(v) for k, v in (line.split() for line in marks.read_text().splitlines())}
    return {
        "fetch": round(t["fetched"] - t["start"], 3),
        "prepare": round(t["prepared"] - t["fetched"], 3),
        "move": round(t["moved"] - t["prepared"], 3),
    }


def identical(target: Path, run_dir: Path, expected: Any) -> bool:
    with MariaDBServer(target, run_dir, skip_grant_tables=True) as rs, rs.connect() as conn:
        return bool(table_fingerprints(conn, include_mysql=False) == expected)


def per_round(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(x[key] / y[key] for x, y in zip(a, b, strict=True)), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="InnoDB data to load (default 256)")
    ap.add_argument("--level", type=int, default=3, help="zstd level of the chain")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="zstd threads of the chain's backups")
    ap.add_argument("--incrementals", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--use-memory", default="1G", help="--use-memory of every prepare, ours and the floor's")
    ap.add_argument(
        "--floor-parallel", type=int, default=1, help="mbstream -x --parallel of the floor (default 1, as ours)"
    )
    add_output_args(ap, "restore_floor")
    args = ap.parse_args()
    if redrawn(args, chart):
        return

    work = work_dir(args, "bp-bench-restore-")
    res: dict[str, Any] = {
        "size_mb_requested": args.size_mb,
        "incrementals": args.incrementals,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "level": args.level,
        "threads": args.threads,
        "use_memory": args.use_memory,
        "floor_parallel": args.floor_parallel,
        "floor_reads_decrypted_copy_of_same_chain": True,
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
        print(f"loaded {res['data_bytes'] / 2**20:.0f} MiB of InnoDB data in {time.monotonic() - t0:.0f}s", flush=True)
        host = {
            "datadir": str(src.datadir),
            "socket": str(src.socket),
            "user": "backup",
            "password_file": str(pw),
            "prepare_memory": args.use_memory,
        }
        repo = work / "repo"
        cfg = {
            "repository": {
                "url": f"file://{repo}",
                "compression": "zstd",
                "compression_level": args.level,
                "compression_threads": args.threads,
                "encryption_key_file": str(_secret(work / "key", generate_key_text())),
            },
            "hosts": {"bench": host},
            "work_dir": str(work / "tmp"),
        }
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        floor_key = _secret(work / "floor-key", generate_key_text())
        chain: list[dict[str, Any]] = []
        for i in range(args.incrementals + 1):
            if i:
                change(src, i - 1)
            kind = "full" if i == 0 else "incremental"
            out = work / "backup.json"
            m = shell(f"{shlex.join(CLI)} -c {config} backup {kind} --host bench --json > {out}")
            mj = json.loads(out.read_text())
            obj = mj["objects"][0]
            link = {
                "id": mj["id"],
                "kind": kind,
                "backup_seconds": m["seconds"],
                "stored_bytes": obj["size"],
                "source_bytes": obj["source_size"],
                "stored_sha256": obj["sha256"],
                "key": obj["key"],
            }
            link.update(plain_copy(config, repo / obj["key"], work / "plain" / f"{i:03d}-{kind}.zst"))
            link.update(ctr_copy(Path(link["plain_path"]), floor_key))
            chain.append(link)
            print(
                f"{kind} {i}: {link['source_bytes'] / 2**20:.0f} MiB streamed, {link['stored_bytes'] / 2**20:.1f} MiB "
                f"stored, {link['plain_bytes'] / 2**20:.1f} MiB decrypted (the floor's copy)",
                flush=True,
            )
        res["chain"] = chain
        with src.connect() as conn:
            expected = table_fingerprints(conn, include_mysql=False)
    finally:
        src.stop()

    memory, par = args.use_memory, args.floor_parallel
    # extractors at once (every link / the base + the rest in turn), and whether it decrypts and checks
    floors = {"floor-all": (0, False), "floor-2": (2, False), "same-work": (2, True)}
    extract_floors = [k for k, (_, same) in floors.items() if not same]
    mbx = f"mbstream -x{f' -p {par}' if par > 1 else ''} -C LINK"
    prepare = (
        f"mariabackup --prepare --use-memory={memory} --target-dir=BASE as soon as BASE is extracted, then "
        f"--incremental-dir=LINK as soon as each LINK is; mariabackup --move-back --target-dir=BASE --datadir=DIR"
    )
    plain = f"zstd -dcq < OBJ | {mbx} (no decryption, no checksum); {prepare}"
    res["commands"] = {
        "ours": "backup-pipelines -c CONFIG restore --host bench --target-datadir DIR --json",
        "floor-all": f"every link at once: {plain}",
        "floor-2": f"the base, and beside it the incrementals one after another (our schedule): {plain}",
        "same-work": f"our schedule: tee FIFO < OBJ.ctr | {OPENSSL_CTR} -d -pass file:KEY | zstd -dcq | {mbx} "
        f"with openssl dgst -sha256 < FIFO (= the copy's); {prepare}",
    }
    rows: dict[str, list[dict[str, Any]]] = {"ours": [], **{k: [] for k in floors}}
    res["identical"] = {}
    startup: list[float] = []  # `list`: the CLI's start-up, config and catalog read, ours' fixed cost
    for r in range(args.rounds):
        for name in rows:
            target = work / f"restored-{name}"
            os.sync()  # the previous run's writeback is not this one's cost
            load1 = os.getloadavg()[0]
            if name == "ours":
                out = work / "restore.json"
                m: dict[str, Any] = shell(
                    f"{shlex.join(CLI)} -c {config} restore --host bench --target-datadir {target} --json > {out}"
                )
                rj = json.loads(out.read_text())
                assert len(rj["chain"]) == args.incrementals + 1, rj["chain"]
                m["phases"] = {
                    "fetch": rj["fetch_seconds"],
                    "prepare": rj["prepare_seconds"],
                    "move": rj["copy_back_seconds"],
                }
            else:
                fw = work / "floor-work"
                fw.mkdir()
                script = work / "floor.sh"
                jobs, same = floors[name]
                script.write_text(floor_script(chain, fw, target, memory, par, jobs, same, floor_key))
                m = shell(f"bash {script}")
                m["phases"] = floor_phases(fw / "marks")
                shutil.rmtree(fw)
            m["loadavg_1m_before"] = round(load1, 2)
            m["phases"]["rest"] = round(max(0.0, m["seconds"] - sum(m["phases"].values())), 3)
            rows[name].append(m)
            if r == 0:
                res["identical"][name] = identical(target, work / f"run-{name}", expected)
            shutil.rmtree(target)
        startup.append(shell(f"{shlex.join(CLI)} -c {config} list --host bench --json > /dev/null")["seconds"])
        print(
            f"round {r + 1}: "
            + "; ".join(
                f"{k} {v[-1]['seconds']:.1f}s/{v[-1]['cpu_seconds']:.1f} CPU-s {v[-1]['phases']} "
                f"(load {v[-1]['loadavg_1m_before']}, others {v[-1]['others_cpu_seconds']:.1f} CPU-s)"
                for k, v in rows.items()
            ),
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)

    res["restore"] = {
        k: {
            "median_seconds": statistics.median(x["seconds"] for x in v),
            "median_cpu_seconds": statistics.median(x["cpu_seconds"] for x in v),
            "median_others_cpu_seconds": statistics.median(x["others_cpu_seconds"] for x in v),
            "median_phases": {
                p: statistics.median(x["phases"][p] for x in v) for p in ("fetch", "prepare", "move", "rest")
            },
            "command": res["commands"][k],
            "runs": v,
        }
        for k, v in rows.items()
    }
    o = res["restore"]["ours"]
    res["ratios_by_floor"] = {
        k: {
            "wall_per_round": per_round(rows["ours"], rows[k], "seconds"),
            "cpu_per_round": per_round(rows["ours"], rows[k], "cpu_seconds"),
            "wall_of_medians": round(o["median_seconds"] / res["restore"][k]["median_seconds"], 3),
            "cpu_of_medians": round(o["median_cpu_seconds"] / res["restore"][k]["median_cpu_seconds"], 3),
        }
        for k in floors
    }
    # The fair floor is the raw tools' best extract schedule in this run: the one with the lower median
    # wall. It neither decrypts nor checks: the goal holds ours, which does both, to the bare extraction.
    res["fair_floor"] = min(extract_floors, key=lambda k: res["restore"][k]["median_seconds"])
    res["ratios"] = res["ratios_by_floor"][res["fair_floor"]]
    res["goal_wall_ratio"] = 1.10
    res["cli_list_seconds"] = {"median": statistics.median(startup), "runs": startup}
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    others = statistics.median(v["median_others_cpu_seconds"] for v in res["restore"].values())
    res["busy"] = others > 0.25 * o["median_seconds"]
    stored = sum(x["stored_bytes"] for x in chain)
    print(
        f"\nrestore of full + {args.incrementals} ({res['data_bytes'] / 2**20:.0f} MiB of InnoDB data, "
        f"{stored / 2**20:.0f} MiB stored), median of {args.rounds} interleaved rounds, --use-memory={memory}, "
        f"{res['cpus']} cores; load average {res['loadavg_end']} at the end, other processes used a median "
        f"{others:.1f} CPU-s per run (the machine was {'busy' if res['busy'] else 'quiet'})"
    )
    print(
        "the extract floors read a decrypted copy of the same chain's objects (decrypted before the rounds, not "
        "timed): no raw tool decrypts our AES-256-GCM chunk framing, so ours decrypts and checks on top of their "
        "work; the same-work floor reads that copy re-encrypted by openssl (AES-256-CTR) and decrypts and "
        "sha256-checks it"
    )
    print(f"{'':<10}{'wall s':>8}{'CPU-s':>8}{'fetch+x':>9}{'prepare':>9}{'move':>7}{'rest':>7}  command")
    for k, v in res["restore"].items():
        ph = v["median_phases"]
        print(
            f"{k:<10}{v['median_seconds']:>8.2f}{v['median_cpu_seconds']:>8.2f}{ph['fetch']:>9.2f}{ph['prepare']:>9.2f}"
            f"{ph['move']:>7.2f}{ph['rest']:>7.2f}  {v['command']}"
        )
    print(
        "rest = wall - phases: ours' process start-up, config, catalog read and lease; the floor's bash. "
        f"`backup-pipelines list --host bench --json` (start-up + catalog read) took a median "
        f"{res['cli_list_seconds']['median']:.2f}s"
    )
    for k, rr in res["ratios_by_floor"].items():
        print(
            f"ours/{k}{' (the fair floor: the faster extract floor)' if k == res['fair_floor'] else ''}: wall "
            f"{rr['wall_per_round']:.2f}x, CPU {rr['cpu_per_round']:.2f}x (median of per-round ratios; of the "
            f"medians {rr['wall_of_medians']:.2f}x / {rr['cpu_of_medians']:.2f}x); goal: wall at most 1.10x"
        )
    print(
        "restored datadirs have the source's table checksums: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in res["identical"].items())
    )
    finish(args, res, chart)


def chart(res: dict[str, Any], path: Path) -> None:
    """Stacked phases of ours and the floor (median), and the wall time of every round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.4), gridspec_kw={"width_ratios": [1.3, 1]})
    names = list(res["restore"])
    nice = {
        "ours": "ours: restore\n(sha256, AES-GCM, zstd,\nmbstream, prepare, move)",
        "floor-all": "floor: raw tools,\nevery link at once\n(decrypted copy)",
        "floor-2": "floor: raw tools,\nbase + incrementals\nin turn (decrypted copy)",
        "same-work": "same-work floor: openssl\ndecrypt + sha256, zstd,\nmbstream, our schedule",
        "floor": "floor: raw tools\n(decrypted copy)",
    }
    labels = [nice.get(n, n) for n in names]
    bottom = [0.0] * len(names)
    for phase, color in (("fetch", "#1f77b4"), ("prepare", "#ff7f0e"), ("move", "#2ca02c")):
        vals = [res["restore"][n]["median_phases"][phase] for n in names]
        ax1.bar(labels, vals, bottom=bottom, color=color, label=phase if phase != "fetch" else "fetch + extract")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    rest = [
        res["restore"][n]["median_phases"].get("rest", max(0.0, res["restore"][n]["median_seconds"] - b))
        for n, b in zip(names, bottom, strict=True)
    ]
    ax1.bar(labels, rest, bottom=bottom, color="#bbbbbb", label="the rest: start-up, catalog, lease")
    for i, n in enumerate(names):
        v = res["restore"][n]
        ax1.annotate(
            f"{v['median_seconds']:.1f} s wall\n{v['median_cpu_seconds']:.1f} CPU-s",
            (i, max(bottom[i], v["median_seconds"])),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    rr = res["ratios"]
    ax1.set_title(
        f"median of {res['rounds']}: ours {rr['wall_per_round']:.2f}x wall, {rr['cpu_per_round']:.2f}x CPU\n"
        f"of the fair floor, {res.get('fair_floor', 'floor')} (goal: at most 1.10x wall)",
        fontsize=10,
    )
    ax1.set_ylabel("seconds (lower is better)")
    ax1.tick_params(axis="x", labelsize=7)
    ax1.set_ylim(0, 1.6 * max(res["restore"][n]["median_seconds"] for n in names))
    ax1.legend(fontsize=7, loc="upper center", ncol=2)
    ax1.grid(axis="y", alpha=0.3)
    rounds = range(1, res["rounds"] + 1)
    for n, color in zip(names, ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c"), strict=False):
        ax2.plot(rounds, [x["seconds"] for x in res["restore"][n]["runs"]], "o-", color=color, label=n)
    ax2.set_xticks(list(rounds))
    ax2.set_xlabel("round (interleaved)")
    ax2.set_ylabel("wall seconds")
    ax2.set_title(
        "every round; 1-min load average before each run: "
        + ", ".join(f"{x['loadavg_1m_before']:.1f}" for x in res["restore"]["ours"]["runs"]),
        fontsize=9,
    )
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"restore of full + {res['incrementals']} incrementals, {res['data_bytes'] / 2**20:.0f} MiB of InnoDB data, "
        f"{res['cpus']} cores, --use-memory={res['use_memory']}{' (busy machine)' if res.get('busy') else ''}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
