"""What a backup costs production: sysbench oltp_read_write before and during our backups and the plain pipeline's.

    python -m benchmarks.production_cost --tables 8 --table-size 200000 --threads 4 --rounds 3

Starts a throwaway MariaDB, loads Debian's `sysbench` oltp_read_write tables into it and
keeps that load running for the whole benchmark (one sysbench process, --threads clients at
full speed). A thin Lua wrapper around the stock script records every transaction's end
time and latency (CLOCK_MONOTONIC, the clock we time backups with), so TPS and p95/p99
latency are exact for any window: before a backup (the --gap seconds of quiet before each
one), during it, and per second for the chart. Interleaved over --rounds, in alternating
order:
  ours full / incremental:  `backup-pipelines backup full|incremental` on defaults
                            (zstd -3 on every core, AES-256-GCM, sha256, file repository)
  plain full / incremental: `mariabackup --backup --stream=xbstream | zstd -3 -T<cores> > FILE`
                            (the same compression; no encryption, no checksum)
then one full backup of ours per throttle setting (hosts.*.throttle) per round: the curve
of TPS kept against backup duration. Prints every figure with the command that produced
it, writes the raw numbers to benchmarks/results/production_cost.json and the chart over
time to benchmarks/results/production_cost.png. Not a test. The machine may be shared:
the CPU-seconds other processes used are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.engines import parse_checkpoints
from backup_pipelines.core.mysqld import MariaDBServer
from benchmarks._measure import add_output_args, finish, redrawn, system_busy, work_dir
from benchmarks.physical_vs_logical import _secret, shell

CLI = [sys.executable, "-m", "backup_pipelines.cli"]
SYSBENCH_DIR = "/usr/share/sysbench"

# The stock oltp_read_write, with every transaction's end time and latency written per thread.
LUA = r"""
require("oltp_read_write")
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bp_timespec;
int clock_gettime(int clk_id, bp_timespec *tp);
]]
local ts = ffi.new("bp_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC, as Python's time.monotonic()
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local out
local stock_init, stock_event, stock_done = thread_init, event, thread_done
function thread_init()
  stock_init()
  out = io.open(os.getenv("BP_LATENCY_DIR") .. "/thread-" .. sysbench.tid, "w")
  out:setvbuf("line")
end
function event()
  local t0 = now()
  stock_event()
  local t1 = now()
  out:write(string.format("%.6f %.6f\n", t1, t1 - t0))
end
function thread_done()
  out:close()
  stock_done()
end
"""

THROTTLES: dict[str, dict[str, Any]] = {
    "nice 19 + ionice idle": {"nice": 19, "ionice_class": "idle"},
    "nice 19 + idle + 1 zstd thread": {"nice": 19, "ionice_class": "idle", "compression_threads": 1},
    # Filled in after the default runs: a third of the unthrottled stream rate, in bytes/s and in
    # the engine's own unit (read+write pairs of its copy chunks, taken here as 1 MiB each).
    "engine --throttle 1/3": {},
    "stream rate 1/3": {},
}


@dataclass
class Window:
    label: str
    start: float
    end: float
    before: tuple[float, float]

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Load:
    """One sysbench oltp_read_write run at full speed for as long as the benchmark needs."""

    def __init__(self, work: Path, base: list[str], threads: int) -> None:
        self.dir = work / "latency"
        self.dir.mkdir()
        script = work / "oltp_read_write_timed.lua"
        script.write_text(LUA)
        env = {**os.environ, "BP_LATENCY_DIR": str(self.dir), "LUA_PATH": f"{SYSBENCH_DIR}/?.lua;;"}
        self.command = ["sysbench", str(script), *base, f"--threads={threads}", "--time=86400", "run"]
        self.err = open(work / "sysbench.err", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command, env=env, stdout=subprocess.DEVNULL, stderr=self.err)

    def stop(self) -> tuple[list[float], list[float]]:
        """Stop the load; every transaction's (end time, latency), sorted by end time."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.err.close()
        rows: list[tuple[float, float]] = []
        for f in self.dir.iterdir():
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:
                    rows.append((float(parts[0]), float(parts[1])))
        rows.sort()
        return [r[0] for r in rows], [r[1] for r in rows]


def stats(ends: list[float], lats: list[float], a: float, b: float) -> dict[str, float]:
    """TPS and latency percentiles (ms) of the transactions that ended in [a, b)."""
    import bisect

    lo, hi = bisect.bisect_left(ends, a), bisect.bisect_left(ends, b)
    window = sorted(lats[lo:hi])
    if not window or b <= a:
        return {"tps": 0.0, "p95_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}

    def pct(p: float) -> float:
        return round(1000 * window[min(len(window) - 1, int(p * len(window)))], 2)

    return {
        "tps": round(len(window) / (b - a), 1),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * window[-1], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tables", type=int, default=8)
    ap.add_argument("--table-size", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=4, help="sysbench client threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gap", type=float, default=8.0, help="quiet seconds before each backup (its baseline)")
    ap.add_argument("--curve-rounds", type=int, default=1, help="rounds of the throttle settings (0: none)")
    add_output_args(ap, "production_cost")
    args = ap.parse_args()
    if redrawn(args, chart):
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the server and the load
    cores = os.cpu_count() or 1
    work = work_dir(args, "bp-prodcost-")
    src = MariaDBServer(
        work / "src" / "data",
        work / "src" / "run",
        log_bin=True,
        buffer_pool="1G",
        extra_args=["--innodb-log-file-size=256M", "--max-connections=200"],
    )
    MariaDBServer.initialize(src.datadir)
    src.start()
    res: dict[str, Any] = {"tables": args.tables, "table_size": args.table_size, "threads": args.threads}
    res.update(rounds=args.rounds, curve_rounds=args.curve_rounds, cpus=cores)
    try:
        pw = _secret(work / "pw", "bench-pass")
        src.sql("CREATE USER 'backup'@'localhost' IDENTIFIED BY 'bench-pass'")
        src.sql("GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'backup'@'localhost'")
        src.sql("CREATE USER 'sb'@'localhost' IDENTIFIED BY 'sb-pass'")
        src.sql("CREATE DATABASE sbtest")
        src.sql("GRANT ALL ON sbtest.* TO 'sb'@'localhost'")
        base = [
            "--db-driver=mysql",
            f"--mysql-socket={src.socket}",
            "--mysql-user=sb",
            "--mysql-password=sb-pass",  # a throwaway server's load user, not a backup secret
            "--mysql-db=sbtest",
            f"--tables={args.tables}",
            f"--table-size={args.table_size}",
        ]
        t0 = time.monotonic()
        subprocess.run(
            ["sysbench", "oltp_read_write", *base, f"--threads={min(args.threads, args.tables)}", "prepare"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        size = src.sql(
            "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = 'sbtest'"
        )[0][0]
        res["data_bytes"] = int(size)
        print(
            f"sysbench prepare: {args.tables} x {args.table_size} rows, {int(size) / 2**20:.0f} MiB "
            f"in {time.monotonic() - t0:.0f}s",
            flush=True,
        )

        cnf = _secret(work / "client.cnf", "[client]\nuser=backup\npassword=bench-pass")
        cfg = {
            "repository": {
                "url": f"file://{work / 'repo'}",
                "compression": "zstd",
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

        def config_with(throttle: dict[str, Any] | None, name: str) -> Path:
            doc = json.loads(json.dumps(cfg))
            if throttle:
                doc["hosts"]["bench"]["throttle"] = throttle
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(doc))
            return path

        default_cfg = config_with(None, "config")
        lsn_dir = work / "plain-lsn"
        lsn_dir.mkdir()
        mb = (
            f"mariabackup --defaults-extra-file={cnf} --backup --stream=xbstream --datadir={src.datadir} "
            f"--socket={src.socket} --target-dir={lsn_dir} --extra-lsndir={lsn_dir}"
        )
        zstd = f"zstd -q -3 -T{cores}"
        commands = {
            "ours": "backup-pipelines -c CONFIG backup full|incremental --host bench (defaults)",
            "plain": f"mariabackup --backup --stream=xbstream [--incremental-lsn=LSN] | {zstd} > FILE",
        }
        res["commands"] = commands

        def plain(kind: str) -> str:
            inc = ""
            if kind == "incremental":
                inc = f" --incremental-lsn={parse_checkpoints((lsn_dir / 'xtrabackup_checkpoints').read_text()).to_lsn}"
            return f"{mb}{inc} 2>/dev/null | {zstd} > {work / 'plain.xb.zst'}"

        def ours(kind: str, config: Path) -> str:
            return f"{' '.join(CLI)} -c {config} backup {kind} --host bench --json > {work / 'ours.json'}"

        load = Load(work, base, args.threads)
        res["load_command"] = " ".join(
            [
                "sysbench",
                "oltp_read_write(timed)",
                *base[:2],
                "--mysql-db=sbtest",
                f"--tables={args.tables}",
                f"--table-size={args.table_size}",
                f"--threads={args.threads}",
                "run",
            ]
        )
        windows: list[Window] = []
        runs: list[dict[str, Any]] = []
        busy0, t_start = system_busy(), time.monotonic()

        def backup(label: str, who: str, kind: str, script: str) -> dict[str, Any]:
            quiet = time.monotonic()
            time.sleep(args.gap)
            a = time.monotonic()
            m = shell(script)
            b = time.monotonic()
            windows.append(Window(label, a, b, (quiet + 1.0, a)))
            run = {"label": label, "who": who, "kind": kind, "start": a, "end": b, **m}
            if who != "plain":
                run["stored_bytes"] = json.loads((work / "ours.json").read_text())["size_bytes"]
                run["source_bytes"] = json.loads((work / "ours.json").read_text())["source_size_bytes"]
            runs.append(run)
            print(f"  {label}: {b - a:.1f}s, {m['cpu_seconds']:.1f} CPU-s", flush=True)
            return run

        try:
            time.sleep(5)  # the load warms up
            for r in range(args.rounds):
                print(f"round {r + 1}", flush=True)
                for kind in ("full", "incremental"):
                    order = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
                    for who in order:
                        script = plain(kind) if who == "plain" else ours(kind, default_cfg)
                        backup(f"{who} {kind}", who, kind, script)
            if args.curve_rounds:
                default_full = [x for x in runs if x["label"] == "ours full"]
                rate = statistics.median(x["source_bytes"] / x["seconds"] for x in default_full) / 3
                THROTTLES["stream rate 1/3"] = {"stream_bytes_per_second": int(rate)}
                THROTTLES["engine --throttle 1/3"] = {"engine_iops": max(1, round(rate / 2**20))}
                res["throttles"] = THROTTLES
                for r in range(args.curve_rounds):
                    print(f"throttle round {r + 1}", flush=True)
                    for name, throttle in THROTTLES.items():
                        backup(f"ours full, {name}", "ours", "full", ours("full", config_with(throttle, "t")))
            time.sleep(args.gap)
        finally:
            t_end = time.monotonic()
            ends, lats = load.stop()
        others = system_busy() - busy0
    finally:
        src.stop()

    # Per backup: the quiet seconds before it, and its own window.
    for run, w in zip(runs, windows, strict=True):
        run["before"] = stats(ends, lats, *w.before)
        run["during"] = stats(ends, lats, w.start, w.end)
        run["tps_kept"] = round(run["during"]["tps"] / run["before"]["tps"], 3) if run["before"]["tps"] else None
    res["runs"] = runs
    res["machine_busy_cpu_seconds"] = round(others, 1)
    res["elapsed_seconds"] = round(t_end - t_start, 1)
    # Per second, for the chart.
    res["timeline"] = [
        {"t": round(s - t_start, 1), **stats(ends, lats, s, s + 1.0)} for s in _frange(t_start, t_end - 1.0, 1.0)
    ]
    res["windows"] = [{"label": w.label, "start": w.start - t_start, "end": w.end - t_start} for w in windows]

    summary = {}
    for label in dict.fromkeys(x["label"] for x in runs):
        xs = [x for x in runs if x["label"] == label]
        summary[label] = {
            "n": len(xs),
            "seconds": statistics.median(x["seconds"] for x in xs),
            "cpu_seconds": statistics.median(x["cpu_seconds"] for x in xs),
            "tps_before": statistics.median(x["before"]["tps"] for x in xs),
            "tps_during": statistics.median(x["during"]["tps"] for x in xs),
            "tps_kept": statistics.median(x["tps_kept"] for x in xs if x["tps_kept"] is not None),
            "p95_ms_before": statistics.median(x["before"]["p95_ms"] for x in xs),
            "p95_ms_during": statistics.median(x["during"]["p95_ms"] for x in xs),
            "p99_ms_before": statistics.median(x["before"]["p99_ms"] for x in xs),
            "p99_ms_during": statistics.median(x["during"]["p99_ms"] for x in xs),
            "max_ms_during": max(x["during"]["max_ms"] for x in xs),
        }
    res["summary"] = summary
    print(
        f"\nsysbench oltp_read_write, {args.tables} x {args.table_size} rows ({res['data_bytes'] / 2**20:.0f} MiB), "
        f"{args.threads} threads, {cores} cores; median of {args.rounds} rounds (throttles: {args.curve_rounds}), "
        "interleaved. The machine is shared: "
        f"{res['machine_busy_cpu_seconds']:.0f} CPU-s were used by all processes over "
        f"{res['elapsed_seconds']:.0f}s ({cores * res['elapsed_seconds']:.0f} CPU-s available)."
    )
    print(f"load: {res['load_command']}")
    print(f"ours: {commands['ours']}\nplain: {commands['plain']}")
    print(
        f"\n{'backup':<40}{'s':>7}{'CPU-s':>7}{'TPS before':>11}{'during':>8}{'kept':>7}"
        f"{'p95 ms':>14}{'p99 ms':>14}{'max ms':>8}"
    )
    for label, s in summary.items():
        print(
            f"{label:<40}{s['seconds']:>7.1f}{s['cpu_seconds']:>7.1f}{s['tps_before']:>11.0f}{s['tps_during']:>8.0f}"
            f"{s['tps_kept']:>7.0%}{s['p95_ms_before']:>7.1f}>{s['p95_ms_during']:<6.1f}"
            f"{s['p99_ms_before']:>7.1f}>{s['p99_ms_during']:<6.1f}{s['max_ms_during']:>8.0f}"
        )
    if "throttles" in res:
        print("\nthrottle settings (hosts.bench.throttle):")
        for name, t in res["throttles"].items():
            print(f"  {name}: {t}")
    finish(args, res, chart)
    import shutil

    shutil.rmtree(work, ignore_errors=True)


def _frange(a: float, b: float, step: float) -> list[float]:
    out, x = [], a
    while x < b:
        out.append(x)
        x += step
    return out


def chart(res: dict[str, Any], path: Path) -> None:
    """TPS and p99 per second over the whole run with each backup shaded, and TPS kept against duration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(18, 9))
    grid = fig.add_gridspec(2, 3)
    ax_tps = fig.add_subplot(grid[0, :2])
    ax_lat = fig.add_subplot(grid[1, :2], sharex=ax_tps)
    ax_curve = fig.add_subplot(grid[:, 2])
    tl = res["timeline"]
    ts = [x["t"] for x in tl]
    ax_tps.plot(ts, [x["tps"] for x in tl], color="black", lw=0.8)
    ax_lat.plot(ts, [x["p99_ms"] for x in tl], color="black", lw=0.8, label="p99")
    ax_lat.plot(ts, [x["p95_ms"] for x in tl], color="grey", lw=0.6, label="p95")
    colors = {"plain": "#1f77b4", "ours": "#d62728", "throttled": "#2ca02c"}
    for w in res["windows"]:
        who = "plain" if w["label"].startswith("plain") else ("throttled" if "," in w["label"] else "ours")
        for ax in (ax_tps, ax_lat):
            ax.axvspan(w["start"], w["end"], color=colors[who], alpha=0.18 if "incremental" in w["label"] else 0.3)
    ax_tps.set_ylabel("TPS (per second)")
    ax_lat.set_ylabel("latency ms (per second)")
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("seconds; shaded: blue plain pipeline, red ours (light: incremental), green ours throttled")
    ax_lat.legend(loc="upper left", fontsize=8)
    ax_tps.set_title(f"sysbench oltp_read_write, {res['tables']} x {res['table_size']} rows, {res['threads']} threads")
    for ax in (ax_tps, ax_lat):
        ax.grid(alpha=0.3)
    for label, s in res["summary"].items():
        if "incremental" in label:
            continue
        who = "plain" if label.startswith("plain") else ("throttled" if "," in label else "ours")
        ax_curve.scatter(s["seconds"], 100 * s["tps_kept"], color=colors[who], s=40)
        ax_curve.annotate(
            label.replace("ours full, ", ""),
            (s["seconds"], 100 * s["tps_kept"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax_curve.axhline(85, color="grey", ls="--", lw=0.8)
    ax_curve.set_xlabel("full backup duration, s (median)")
    ax_curve.set_ylabel("TPS kept during the full backup, % of the quiet seconds before it")
    ax_curve.set_title("TPS kept against duration (dashed: 85%)")
    ax_curve.grid(alpha=0.3)
    fig.suptitle(f"what a backup costs production, {res['cpus']} cores, median of {res['rounds']} rounds", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
