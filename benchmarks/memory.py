"""Peak RSS of a backup and of a restore on highly compressible streams, at two stream lengths.

    python -m benchmarks.memory [--sizes-gib 2 4] [--quick]

The backup is the path every physical backup and dump takes (`core.pipeline.stream_command`:
a producer's stdout -> zstd -> the S3 multipart uploader); the restore is the path every
extraction takes (`core.restore.fetch_into_command`: S3 download -> sha256 -> unzstd -> the
byte-bounded feeder -> a consumer's stdin), on the repository defaults (16 MiB parts,
concurrency 8, zstd level 3), against a moto server in its own process on 127.0.0.1. The
consumer is `cat > /dev/null`, so the engine's own `--prepare` is not in the figure.

Two kinds of stream:
  pages  16 KiB pages with 1/8 random bytes and the rest zeros (~8:1), a sparse tablespace
  zeros  all zeros (~30,000:1): the decompression-bomb case for restore

Each figure is the peak RSS of the measured process (os.wait4), printed beside the same
work done by `zstd` (the floor: compressing, or decompressing a local copy of the same
object), with the floor's command. Memory should be flat in the stream length: the last
column is RSS at the longer length over RSS at the shorter. Writes the raw numbers to
benchmarks/results/memory.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks._measure import GiB, Measurement, MiB, format_table, run, run_piped
from benchmarks.stream_peers import BUCKET, RESULTS, Admin, MotoServer, bench_env

PAGE = 16 * 1024
PATTERN_BYTES = 64 * MiB  # distinct pages cycled: longer than any zstd window at level 3


def make_pattern(path: Path, kind: str) -> None:
    with open(path, "wb") as f:
        if kind == "zeros":
            f.write(bytes(PATTERN_BYTES))
            return
        rnd = PAGE // 8
        for _ in range(PATTERN_BYTES // PAGE):
            f.write(os.urandom(rnd) + bytes(PAGE - rnd))


def producer(pattern: Path, size: int) -> list[str]:
    """A shell loop of `cat` (a few hundred KiB of RSS) that writes `size` bytes of the pattern."""
    n = size // PATTERN_BYTES
    return ["sh", "-c", f'i=0; while [ "$i" -lt {n} ]; do cat "{pattern}"; i=$((i+1)); done']


# -- the measured workers (run in a child: python -m benchmarks.memory worker ...) ----------


def _session(endpoint: str) -> Any:
    from backup_pipelines.core.codec import Codec
    from backup_pipelines.core.crypto import Keyring
    from backup_pipelines.core.repository.s3 import S3Repository

    repo = S3Repository(f"s3://{BUCKET}/memory", endpoint_url=endpoint)
    # What stream_command and fetch_into_command use of a Session: the repository defaults.
    return SimpleNamespace(repo=repo, codec=Codec("zstd", None, 3, 0), keyring=Keyring(None))


def worker_backup(endpoint: str, key: str, cmd: list[str]) -> None:
    from backup_pipelines.core.pipeline import stream_command

    s = stream_command(_session(endpoint), cmd, key, what="memory benchmark backup", host="bench", backup_id="b")
    print(json.dumps({"size": s.size, "sha256": s.sha256, "source_size": s.source_size}))


def worker_restore(endpoint: str, key: str, size: int, sha256: str) -> None:
    from datetime import UTC, datetime

    from backup_pipelines.core.catalog import BackupManifest, StoredObject
    from backup_pipelines.core.restore import fetch_into_command

    now = datetime.now(UTC)
    m = BackupManifest(
        id="b",
        host="bench",
        kind="full",
        engine="mariabackup",
        started_at=now,
        finished_at=now,
        duration_seconds=0,
        size_bytes=size,
        source_size_bytes=0,
        compression="zstd",
        objects=[StoredObject(name="data", key=key, size=size, sha256=sha256)],
    )
    n = fetch_into_command(_session(endpoint), m, ["sh", "-c", "cat > /dev/null"], what="memory benchmark restore")
    print(json.dumps({"read": n}))


# -- the driver ------------------------------------------------------------------------------


def measure(endpoint: str, env: dict[str, str], pattern: Path, size: int, work: Path, label: str) -> dict[str, Any]:
    key = f"{label}.zst"
    out = work / f"{label}.json"
    backup = run(
        [sys.executable, "-m", "benchmarks.memory", "worker-backup", endpoint, key, "--", *producer(pattern, size)],
        stdout=out,
        env=env,
    )
    stored = json.loads(out.read_text())
    assert stored["source_size"] == size, stored
    restore = run(
        [
            sys.executable,
            "-m",
            "benchmarks.memory",
            "worker-restore",
            endpoint,
            key,
            str(stored["size"]),
            stored["sha256"],
        ],
        stdout=work / f"{label}.restore.json",
        env=env,
    )
    local = work / f"{label}.local.zst"
    floor_backup = run_piped(producer(pattern, size), ["zstd", "-3", "-T0", "-q", "-c"], stdout=local)
    floor_restore = run(["zstd", "-d", "-q", "-c", str(local)])
    local.unlink()
    return {
        "size": size,
        "stored": stored["size"],
        "backup": backup.to_dict(),
        "restore": restore.to_dict(),
        "floor_backup": floor_backup.to_dict(),
        "floor_restore": floor_restore.to_dict(),
    }


def mib(m: dict[str, Any] | Measurement) -> float:
    rss = m["maxrss"] if isinstance(m, dict) else m.maxrss
    return float(rss) / MiB


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker-backup":
        sep = sys.argv.index("--")
        worker_backup(sys.argv[2], sys.argv[3], sys.argv[sep + 1 :])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "worker-restore":
        worker_restore(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return 0
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes-gib", type=float, nargs=2, default=[2.0, 4.0], help="the two stream lengths")
    ap.add_argument("--kinds", nargs="+", default=["pages", "zeros"], choices=["pages", "zeros"])
    ap.add_argument("--quick", action="store_true", help="0.25 and 0.5 GiB: a smoke run")
    ap.add_argument("--out", default=str(RESULTS / "memory.json"))
    args = ap.parse_args()
    sizes = [0.25, 0.5] if args.quick else args.sizes_gib
    if not shutil.which("zstd"):
        print("needs the zstd command (apt package zstd) for the floor", file=sys.stderr)
        return 2
    env = bench_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bp-bench-memory-") as tmp:
        work = Path(tmp)
        server = MotoServer(work / "moto.log", env).start()
        try:
            admin = Admin(server.endpoint, env)
            admin.create_bucket()
            for kind in args.kinds:
                pattern = work / f"{kind}.pattern"
                make_pattern(pattern, kind)
                for gib in sizes:
                    size = max(1, round(gib * GiB / PATTERN_BYTES)) * PATTERN_BYTES
                    r = measure(server.endpoint, env, pattern, size, work, f"{kind}-{size}")
                    r["kind"] = kind
                    results.append(r)
                    admin.clear("memory/")
                    print(
                        f"{kind} {size / GiB:.2f} GiB (stored {r['stored'] / MiB:.1f} MiB): backup "
                        f"{mib(r['backup']):.0f} MiB in {r['backup']['wall']:.1f}s, restore "
                        f"{mib(r['restore']):.0f} MiB in {r['restore']['wall']:.1f}s",
                        flush=True,
                    )
        finally:
            server.stop()
    rows = []
    for kind in args.kinds:
        short, long_ = [r for r in results if r["kind"] == kind]
        for what, floor, floor_cmd in (
            ("backup", "floor_backup", "producer | zstd -3 -T0 -q -c > file"),
            ("restore", "floor_restore", "zstd -d -q -c file > /dev/null"),
        ):
            for r in (short, long_):
                rows.append(
                    [
                        kind,
                        what,
                        f"{r['size'] / GiB:.2f} GiB",
                        f"{mib(r[what]):.0f} MiB",
                        f"{mib(r[floor]):.0f} MiB",
                        f"{mib(r[what]) / max(mib(r[floor]), 1e-9):.1f}x",
                        floor_cmd,
                        f"{mib(long_[what]) / mib(short[what]):.2f}" if r is long_ else "",
                    ]
                )
    print()
    print(
        format_table(
            ["stream", "run", "length", "peak RSS", "floor RSS", "vs floor", "floor command", "long/short"], rows
        )
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results}, indent=2) + "\n")
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
