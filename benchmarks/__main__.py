"""Every benchmark, one after the other: `python -m benchmarks [--quick]` (or `./dev bench`).

    stream_peers         stream put/get against s5cmd, the AWS CLI and boto3 on one moto server
    physical_vs_logical  full/incremental backups against their floors, restore against re-import
    restore_floor        restore of full + 4 incrementals against the raw tools (zstd -d | mbstream -x, prepare)
    memory               peak RSS of backup and restore on 2 and 4 GiB compressible streams, against zstd
    production_cost      sysbench TPS and latency before/during our backups and the plain pipeline's
    binlog               RPO lag of binlog stream / push, replay MiB/s against mariadb-binlog | mariadb
    fleet                orchestrator CPU per host-backup: 50 hosts under the real daemon on PostgreSQL

Each writes its raw numbers (JSON) and a chart (PNG) to benchmarks/results/ and prints every
figure beside its peer. Nothing here passes or fails. `--only NAME` runs one of them; other
arguments go to each benchmark unchanged (see `python -m benchmarks.NAME --help`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = {
    "stream_peers": {"quick": ["--quick"]},
    "physical_vs_logical": {"quick": ["--size-mb", "256", "--incrementals", "2", "--rounds", "1"]},
    "restore_floor": {"quick": ["--size-mb", "128", "--incrementals", "2", "--rounds", "1"]},
    "memory": {"quick": ["--quick"]},
    "production_cost": {"quick": ["--tables", "2", "--table-size", "20000", "--threads", "2", "--rounds", "1"]},
    "binlog": {"quick": ["--seconds", "20", "--push-every", "10", "--binlog-mib", "64"]},
    "fleet": {"quick": ["--hosts", "6", "--servers", "2", "--interval", "1", "--minutes", "3"]},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run just this one (repeatable)")
    ap.add_argument("--quick", action="store_true", help="a smoke run of each: small data, one round")
    args, rest = ap.parse_known_args()
    failed = []
    for name in args.only or list(BENCHMARKS):
        argv = [sys.executable, "-m", f"benchmarks.{name}", *(BENCHMARKS[name]["quick"] if args.quick else []), *rest]
        print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call(argv)
        print(f"=== {name}: exit {code} after {time.monotonic() - t0:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
