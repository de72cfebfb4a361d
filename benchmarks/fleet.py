"""Fleet simulation: what a scheduled host-backup costs the orchestrator, batched or run per host.

N host entries spread over a few real throwaway MariaDB servers, incrementals every
`--interval` minutes for `--minutes`, on the production instance (deploy/dagster.yaml:
PostgreSQL, the run queue with its per-host limits) under a real `dagster-daemon run`.
Every Python process the daemon starts records its own CPU at exit (benchmarks/_probe), and
the backup tool is run through benchmarks/_rusage_run, so the orchestrator's CPU (daemon,
code server, run and step workers) is measured apart from the backup itself, which on a real
fleet runs on the database host. Reported: runs launched per minute, queue delay from tick to
run start, orchestrator CPU-s per host-backup against the goal (1 CPU-s) and against the
backup tool's own CPU per backup (the floor, measured in the same run), tick-to-finished
latency. Raw numbers and a chart go to benchmarks/results/fleet.{json,png}. The
verify_after_base sensor is stopped (a sandbox restore per new base is not what is measured);
the first tick takes a base of every host, later ticks incrementals.

    python -m benchmarks.fleet                            # 50 hosts, 3 servers, every 5 min for 20 min, batched
    python -m benchmarks.fleet --schedule-runs per_host   # the same fleet, one run per host per tick
    python -m benchmarks.fleet --minutes 10               # the short run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_pipelines.core.mysqld import MariaDBServer
from tests.fixtures.daemon import Orchestrator, start_source, write_fleet_config
from tests.fixtures.postgres import PostgresCluster

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOAL_CPU_S = 1.0


def _role(argv: list[str]) -> str:
    text = " ".join(argv)
    if "_rusage_run" in text or "backup_pipelines.cli" in text or "backup_pipelines/cli.py" in text:
        return "backup_tool"  # the worker CLI (on a real fleet: the database host's CPU)
    if "dagster-daemon" in text:
        return "daemon"
    if "code-server" in text:
        return "code_server"
    return "dagster"


def classify(procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Role per process. The code server starts its gRPC process, which starts run workers by
    multiprocessing spawn: those carry no telling argv (`api grpc`, `-c ...`), so they are told
    apart by the tree: generations below the code server (or below the daemon, for a location
    the daemon manages itself): 1 the serving process, 2 a run worker, 3 a step worker."""
    by_pid = {p["pid"]: p for p in procs}
    base = {p["pid"]: _role(p["argv"]) for p in procs}
    names = {1: "code_server", 2: "run_worker", 3: "step_worker"}

    def generation(p: dict[str, Any]) -> int:
        d, cur = 0, p
        while cur is not None and base.get(cur["pid"]) == "dagster" and d < 8:
            d += 1
            cur = by_pid.get(cur["ppid"])
        return d

    for p in procs:
        role = base[p["pid"]]
        p["role"] = role if role != "dagster" else names.get(generation(p), "dagster_other")
    return procs


def session_snapshot(sids: list[int]) -> list[dict[str, Any]]:
    """CPU so far of every live process in the orchestrator's sessions (for those that exit by signal)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            if os.getsid(p.pid) not in sids:
                continue
            t = p.cpu_times()
            argv = p.info["cmdline"] or []
            out.append({"pid": p.pid, "ppid": p.info["ppid"], "argv": argv, "cpu": t.user + t.system})
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return out


def _load_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso).timestamp()


def collect_runs(instance: Any) -> list[dict[str, Any]]:
    """Every backup run, per-host or batch: when it was created, started and ended."""
    from dagster import RunsFilter

    out = []
    for job in ("physical_backups", "physical_backup_batches"):
        for rec in instance.get_run_records(RunsFilter(job_name=job)):
            run = rec.dagster_run
            out.append(
                {
                    "run_id": run.run_id,
                    "job": job,
                    "host": run.tags.get("backup-pipelines/host"),
                    "status": run.status.value,
                    "tick": _ts(run.tags.get("backup-pipelines/as-of")),
                    "created": rec.create_timestamp.timestamp(),
                    "start": rec.start_time,
                    "end": rec.end_time,
                }
            )
    return out


def collect_backups(instance: Any, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per host-backup: a per-host run is one; a batch run holds one step per host,
    whose start and end are its step's (so queue delay and latency are per host either way)."""
    from dagster import DagsterEventType

    out = []
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for r in runs:
        if r["job"] == "physical_backups":
            out.append(dict(r))
            continue
        steps: dict[str, dict[str, Any]] = {}
        for e in instance.all_logs(r["run_id"], of_type=kinds):
            key = e.step_key or ""
            if not key.startswith("back_up_host["):
                continue
            row = steps.setdefault(
                key,
                {
                    "run_id": r["run_id"],
                    "job": r["job"],
                    "host": key[13:-1],
                    "tick": r["tick"],
                    "created": r["created"],
                },
            )
            t = e.dagster_event.event_type
            if t == DagsterEventType.STEP_START:
                row.setdefault("start", e.timestamp)  # the first attempt's start
            else:
                row["end"] = e.timestamp
                row["status"] = "SUCCESS" if t == DagsterEventType.STEP_SUCCESS else "FAILURE"
        for row in steps.values():
            row.setdefault("start", None)
            row.setdefault("end", None)
            row.setdefault("status", "NOT_FINISHED")
            out.append(row)
    return out


def summarize(
    runs: list[dict[str, Any]], backups: list[dict[str, Any]], probes: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict:
    ok = [b for b in backups if b["status"] == "SUCCESS"]
    started = [b for b in backups if b["start"]]
    runs_started = [r for r in runs if r["start"]]
    cpu_by_role: Counter[str] = Counter()
    for p in classify(probes):
        cpu_by_role[p["role"]] += p["cpu"]
    tool_calls = [t for t in tools if "backup" in t["argv"] and t["exit"] == 0]
    tool_cpu = sum(t["cpu"] for t in tools)
    n = max(len(ok), 1)
    orchestrator = sum(v for k, v in cpu_by_role.items() if k != "backup_tool")
    workers = cpu_by_role["run_worker"] + cpu_by_role["step_worker"]
    delays = [b["start"] - b["tick"] for b in started if b["tick"]]
    latency = [b["end"] - b["tick"] for b in ok if b["tick"] and b["end"]]

    def per_minute(rows: list[dict[str, Any]]) -> float:
        if not rows:
            return 0.0
        first, last = min(r["start"] for r in rows), max(r["start"] for r in rows)
        return len(rows) / max((last - first) / 60, 1 / 60)

    return {
        "runs": len(runs),
        "host_backups_requested": len(backups),
        "host_backups": len(ok),
        "failed": sum(1 for b in backups if b["status"] == "FAILURE"),
        "runs_per_minute": per_minute(runs_started),
        "host_backups_started_per_minute": per_minute(started),
        "queue_delay_s": _stats(delays),
        "tick_to_finished_s": _stats(latency),
        "cpu_by_role_s": dict(cpu_by_role),
        "orchestrator_cpu_per_host_backup_s": orchestrator / n,
        "run_and_step_worker_cpu_per_host_backup_s": workers / n,
        "run_and_step_worker_cpu_per_started_run_s": workers / max(len(runs_started), 1),
        "backup_tool_cpu_per_backup_s": (sum(t["cpu"] for t in tool_calls) / len(tool_calls)) if tool_calls else None,
        "backup_tool_cpu_total_s": tool_cpu,
    }


def _stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "median": None, "p95": None, "max": None}
    s = sorted(xs)
    return {"n": len(s), "median": statistics.median(s), "p95": s[int(0.95 * (len(s) - 1))], "max": s[-1]}


def chart(runs: list[dict[str, Any]], backups: list[dict[str, Any]], summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    started = [b for b in backups if b["start"]]
    t0 = min((b["tick"] or b["created"]) for b in backups) if backups else 0
    runs_min = Counter(int((r["start"] - t0) // 60) for r in runs if r["start"])
    backups_min = Counter(int((b["start"] - t0) // 60) for b in started)
    xs = sorted(set(runs_min) | set(backups_min))
    ax[0][0].bar([x - 0.2 for x in xs], [runs_min[x] for x in xs], width=0.4, color="tab:blue", label="runs")
    ax[0][0].bar([x + 0.2 for x in xs], [backups_min[x] for x in xs], width=0.4, color="tab:cyan", label="host-backups")
    ax[0][0].set(title="runs and host-backups started per minute", xlabel="minute since first tick", ylabel="count")
    ax[0][0].legend()
    ax[0][1].scatter(
        [(r["tick"] - t0) / 60 for r in started if r["tick"]],
        [r["start"] - r["tick"] for r in started if r["tick"]],
        s=8,
    )
    ax[0][1].set(title="queue delay: tick -> host's backup starts", xlabel="tick (minute)", ylabel="seconds")
    roles = {k: v / max(summary["host_backups"], 1) for k, v in summary["cpu_by_role_s"].items()}
    names = sorted(roles)
    ax[1][0].bar(
        names, [roles[k] for k in names], color=["tab:gray" if k == "backup_tool" else "tab:orange" for k in names]
    )
    ax[1][0].axhline(GOAL_CPU_S, color="red", linestyle="--", label=f"goal {GOAL_CPU_S} CPU-s (orchestrator total)")
    ax[1][0].set(title="CPU-s per host-backup by process role", ylabel="CPU-s")
    ax[1][0].tick_params(axis="x", rotation=30)
    ax[1][0].legend()
    ok = [b for b in backups if b["status"] == "SUCCESS" and b["tick"] and b["end"]]
    ax[1][1].scatter([(r["tick"] - t0) / 60 for r in ok], [r["end"] - r["tick"] for r in ok], s=8, color="tab:green")
    ax[1][1].set(title="tick -> host's backup finished", xlabel="tick (minute)", ylabel="seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(
    runs: list[dict[str, Any]],
    backups: list[dict[str, Any]],
    probes: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    meta: dict,
    out: Path,
) -> None:
    """Summary, JSON and chart from the measured runs and processes; prints the figures."""
    summary = summarize(runs, backups, probes, tools)
    summary.update(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = {"summary": summary, "runs": runs, "backups": backups, "processes": probes, "tool_calls": tools}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    title = (
        f"{meta['hosts']} hosts / {meta['servers']} MariaDB, every {meta['interval_minutes']} min "
        f"for {meta['minutes']:g} min, {meta.get('schedule_runs', 'per_host')} runs, "
        f"{meta.get('storage', 'stock')} storage"
    )
    floor = summary["backup_tool_cpu_per_backup_s"]
    o = summary["orchestrator_cpu_per_host_backup_s"]
    print(f"schedule_runs: {meta.get('schedule_runs', 'per_host')}  storage: {meta.get('storage', 'stock')}")
    print(
        f"runs {summary['runs']}  host-backups requested {summary['host_backups_requested']}  "
        f"succeeded {summary['host_backups']}  failed {summary['failed']}"
    )
    print(f"runs launched per minute         {summary['runs_per_minute']:.1f}")
    print(f"host-backups started per minute  {summary['host_backups_started_per_minute']:.1f}")
    print(f"queue delay tick->start (s)   {summary['queue_delay_s']}")
    print(f"tick->finished (s)            {summary['tick_to_finished_s']}")
    print(f"CPU by role (s)               { {k: round(v, 1) for k, v in summary['cpu_by_role_s'].items()} }")
    print(f"orchestrator CPU-s per host-backup  {o:.2f}  (goal {GOAL_CPU_S}: {o / GOAL_CPU_S:.2f}x)")
    print(f"  of which run+step workers         {summary['run_and_step_worker_cpu_per_host_backup_s']:.2f}")
    print(f"run+step worker CPU-s per started run {summary['run_and_step_worker_cpu_per_started_run_s']:.2f}")
    if floor:
        print(
            f"backup tool CPU-s per backup (floor: `backup-pipelines backup full|incremental --host H --json`) "
            f"{floor:.2f}; orchestrator/floor = {o / floor:.2f}x"
        )
    print(f"results: {out.with_suffix('.json')}")
    try:  # the figures are printed and saved first: a missing plotting library costs only the chart
        chart(runs, backups, summary, out.with_suffix(".png"), title)
        print(f"chart: {out.with_suffix('.png')}")
    except ImportError:
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')")


def reanalyze(run_dir: Path, saved: Path, out: Path) -> None:
    """Rebuild the report of a finished run from its saved runs and the probe logs it left."""
    doc = json.loads(saved.read_text())
    meta = {
        k: doc["summary"][k]
        for k in (
            "hosts",
            "servers",
            "interval_minutes",
            "minutes",
            "wall_s",
            "cpus",
            "command",
            "schedule_runs",
            "storage",
        )
        if k in doc["summary"]
    }
    meta["reanalyzed_from"] = str(run_dir)
    runs = doc["runs"]
    for r in runs:
        r.setdefault("job", "physical_backups")
    backups = doc.get("backups") or [dict(r) for r in runs]
    report(runs, backups, _load_lines(run_dir / "probe.jsonl"), _load_lines(run_dir / "tools.jsonl"), meta, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50, help="host entries (default 50)")
    ap.add_argument("--servers", type=int, default=3, help="real MariaDB servers they share (default 3)")
    ap.add_argument("--interval", type=int, default=5, help="incremental interval, minutes (default 5)")
    ap.add_argument("--minutes", type=float, default=20, help="how long to let the daemon run (default 20)")
    ap.add_argument("--drain-minutes", type=float, default=10, help="how long queued runs may finish after (10)")
    ap.add_argument(
        "--schedule-runs",
        choices=("batched", "per_host"),
        default="batched",
        help="orchestration.schedule_runs: one run per tick (a step per host; the default) or one run per host",
    )
    ap.add_argument(
        "--storage",
        choices=("pooled", "stock"),
        default="pooled",
        help="deploy/dagster.yaml's pooled PostgreSQL storage (default), or dagster-postgres's stock one",
    )
    ap.add_argument("--out", default=None, help="result path stem (.json, .png); default results/fleet-<mode>")
    ap.add_argument("--reanalyze", metavar="RUN_DIR", help="rebuild the report from a finished run's probe logs")
    args = ap.parse_args()
    if args.reanalyze:
        out = Path(args.out or RESULTS / f"fleet-{args.schedule_runs}-{args.storage}")
        reanalyze(Path(args.reanalyze), out.with_suffix(".json"), out)
        return 0

    root = Path(tempfile.mkdtemp(prefix="bp-fleet-"))
    probe_log, tool_log = root / "probe.jsonl", root / "tools.jsonl"
    template = root / "template"
    MariaDBServer.initialize(template)
    sources = []
    try:
        for i in range(args.servers):
            sources.append(start_source(template, root / f"srv{i}"))
        hosts = {f"h{i:03d}": sources[i % args.servers] for i in range(args.hosts)}
        wrapper = f"{sys.executable} -m benchmarks._rusage_run {tool_log} -- {sys.executable} -m backup_pipelines.cli"
        config = write_fleet_config(root / "config.yaml", hosts, incremental_minutes=args.interval, work=root)
        import yaml

        doc = yaml.safe_load(config.read_text())
        for h in doc["hosts"].values():
            h["transport"] = {"kind": "local", "command": wrapper}
        doc["orchestration"] = {"schedule_runs": args.schedule_runs}
        config.write_text(yaml.safe_dump(doc))
        with PostgresCluster() as pg:
            db = pg.create_database()
            orch = Orchestrator(root / "home", config, db.env)
            if args.storage == "stock":  # the same PostgreSQL settings, without the pool
                instance_file = orch.home / "dagster.yaml"
                inst = yaml.safe_load(instance_file.read_text())
                inst["storage"] = {"postgres": {"postgres_db": inst["storage"]["custom"]["config"]["postgres_db"]}}
                instance_file.write_text(yaml.safe_dump(inst))
            repo_root = HERE.parent
            orch.env["PYTHONPATH"] = os.pathsep.join([str(HERE / "_probe"), str(repo_root)])
            orch.env["BP_CPU_PROBE_LOG"] = str(probe_log)
            schedule = f"incremental_backups_every_{args.interval}m"
            orch.start_schedule(schedule)
            # a verification per new base (a sandbox restore each) is not what is measured here
            orch.dagster("sensor", "stop", "verify_after_base")
            probe_log.unlink(missing_ok=True)  # the CLI call above is not the fleet's
            print(f"fleet: {args.hosts} hosts on {args.servers} servers, {schedule}, {args.minutes} min; {root}")
            t_start = time.time()
            with orch:
                deadline = time.monotonic() + args.minutes * 60
                while time.monotonic() < deadline:
                    time.sleep(15)
                    if not orch.alive():
                        print(orch.log_tail(), file=sys.stderr)
                        return 1
                # stop new ticks, let queued and running runs drain (bounded)
                orch.env.pop("BP_CPU_PROBE_LOG")  # the CLI call below is not the fleet's
                orch.dagster("schedule", "stop", schedule)
                from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

                os.environ.update(db.env)
                with DagsterInstance.from_config(str(orch.home)) as instance:
                    busy = (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
                    drain = time.monotonic() + args.drain_minutes * 60
                    while instance.get_runs_count(RunsFilter(statuses=list(busy))) and time.monotonic() < drain:
                        time.sleep(5)
                    runs = collect_runs(instance)
                    backups = collect_backups(instance, runs)
                snapshot = session_snapshot(orch.sessions())
            wall = time.time() - t_start
    finally:
        for s in sources:
            s.server.stop()
    probes, tools = _load_lines(probe_log), _load_lines(tool_log)
    seen = {p["pid"] for p in probes}
    probes += [p for p in snapshot if p["pid"] not in seen]  # killed at stop: their CPU so far
    meta = {
        "hosts": args.hosts,
        "servers": args.servers,
        "interval_minutes": args.interval,
        "minutes": args.minutes,
        "wall_s": wall,
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "schedule_runs": args.schedule_runs,
        "storage": args.storage,
    }
    report(runs, backups, probes, tools, meta, Path(args.out or RESULTS / f"fleet-{args.schedule_runs}-{args.storage}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
