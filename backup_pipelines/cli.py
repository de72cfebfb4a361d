"""backup-pipelines: the standalone CLI. Thin: parse arguments, call core, print.

Works with the orchestrator down. Exit codes are `core.errors.ExitCode`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.errors import BackupPipelinesError, ExitCode

if TYPE_CHECKING:
    from .core.config import Config

# Imported where used: the config model (pydantic) costs `stream put/get`, which rarely need
# it, a tenth of a second of start-up CPU per invocation.
CONFIG_ENV = "BACKUP_PIPELINES_CONFIG"

log = logging.getLogger("backup_pipelines")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


@contextmanager
def _progress(enabled: bool, description: str, total: int | None = None) -> Iterator[Callable[..., None] | None]:
    """A transfer progress bar on a terminal; nothing otherwise."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total_now: int | None = None) -> None:
            bar.update(task, completed=done, total=total_now if total_now is not None else total)

        yield update


def _session(args: argparse.Namespace) -> Any:
    from .core.session import Session

    return Session.open(_config(args))


def _config(args: argparse.Namespace) -> Config:
    from .core.config import load_config

    cfg = load_config(args.config)
    if getattr(args, "repository", None):  # e.g. an offsite copy restored after the primary was lost
        from .core.config import override_repository_url

        cfg = override_repository_url(cfg, args.repository)
    return cfg


# -- commands ------------------------------------------------------------------------
def cmd_backup(args: argparse.Namespace) -> int:
    from .core.backup import run_physical_backup

    with _session(args) as s, _progress(not args.json, f"{args.kind} backup of {args.host}") as bar:
        m = run_physical_backup(s, args.host, args.kind, progress=bar)
    if args.json:
        _print_json(m.summary())
    else:
        print(
            f"{m.kind} backup {m.id} of {m.host} committed: {_human_bytes(m.size_bytes)} stored "
            f"({_human_bytes(m.source_size_bytes)} streamed), LSN {m.from_lsn} -> {m.to_lsn}, "
            f"{m.duration_seconds:.1f}s" + (f", parent {m.parent_id}" if m.parent_id else "")
        )
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    from datetime import date

    from .core.dumps import run_dump

    try:
        for_date = date.fromisoformat(args.for_date) if args.for_date else None
    except ValueError:
        from .core.errors import ConfigError

        raise ConfigError(f"--for-date {args.for_date!r} is not a date", hint="write it as YYYY-MM-DD") from None
    with _session(args) as s, _progress(not args.json, f"dump of {args.host}") as bar:
        m = run_dump(s, args.host, for_date=for_date, progress=bar)
    if args.json:
        _print_json(m.summary())
    else:
        print(
            f"dump {m.id} of {m.host} ({m.engine}) committed: {len(m.databases or [])} database(s), "
            f"{len(m.objects)} object(s), {_human_bytes(m.size_bytes)} stored "
            f"({_human_bytes(m.source_size_bytes)} of SQL), {m.duration_seconds:.1f}s"
        )
    return 0


def cmd_restore_dump(args: argparse.Namespace) -> int:
    from .core.dumps import restore_dump

    with _session(args) as s, _progress(not args.json, f"loading dump of {args.host}") as bar:
        res = restore_dump(
            s,
            args.host,
            args.target_host,
            backup_id=args.backup_id,
            database=args.database,
            grants=args.grants,
            force=args.force,
            progress=bar,
        )
    if args.json:
        _print_json(res)
    else:
        print(
            f"loaded dump {res['backup_id']} of {res['host']} into {res['target']}: "
            f"{', '.join(res['databases'])} ({_human_bytes(res['bytes'])} of SQL in {res['seconds']:.1f}s)"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _session(args) as s:
        if args.host not in s.config.hosts and args.host not in s.catalog.hosts():
            s.config.host(args.host)  # raises: neither configured nor in the repository (a typo?)
        backups = s.catalog.list_backups(args.host, kinds=args.kind or None)
    if args.json:
        from .binlog_cli import binlog_summary

        with _session(args) as s:
            binlogs = binlog_summary(s, args.host)
        _print_json({"host": args.host, "backups": [m.summary() for m in backups], "binlogs": binlogs})
        return 0
    if not backups:
        print(f"no completed backups of {args.host}")
        return 0
    head = ("ID", "KIND", "PARENT", "FROM LSN", "TO LSN", "STORED", "FINISHED (UTC)")
    rows = [
        (
            m.id,
            m.kind,
            m.parent_id or "-",
            str(m.from_lsn or 0),
            str(m.to_lsn or 0),
            _human_bytes(m.size_bytes),
            f"{m.finished_at:%Y-%m-%d %H:%M:%S}",
        )
        for m in backups
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    numbers = {3, 4, 5}  # right-aligned
    for r in [head, *rows]:
        cells = [c.rjust(w) if i in numbers else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(cells).rstrip())
    from .binlog_cli import print_binlog_footer

    with _session(args) as s:
        print_binlog_footer(s, args.host)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from .binlog_cli import restore_point
    from .core.restore import restore_chain

    with _session(args) as s, _progress(not args.json, f"restore of {args.host}") as bar:
        res = restore_point(args, s, bar) or restore_chain(
            s, args.host, Path(args.target_datadir), backup_id=args.backup_id, at=args.at, progress=bar
        )
    if args.json:
        _print_json(res.__dict__)
    else:
        print(
            f"restored {res.backup_id} of {res.host} (chain of {len(res.chain)}) into {res.target} in "
            f"{res.seconds:.1f}s (fetch {res.fetch_seconds:.1f}s, prepare {res.prepare_seconds:.1f}s, "
            f"move {res.copy_back_seconds:.1f}s). Start it with: mariadbd --datadir={res.target}"
            + (" (chown -R mysql:mysql it first)" if os.geteuid() == 0 else "")
        )
        if res.binlog and "transactions" in res.binlog:
            b = res.binlog
            print(
                f"replayed {b['transactions']} transaction(s) of archived binlog up to {b['point'] or b['last_gtid']} "
                f"(last GTID {b['last_gtid'] or '-'}); latest restorable time {b['latest_restorable']}"
            )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .core.verify import verify_backup

    with _session(args) as s, _progress(not args.json, f"verify {args.host}") as bar:
        report = verify_backup(s, args.host, backup_id=args.backup_id, at=args.at, progress=bar, raise_on_failure=False)
    if args.json:
        _print_json(report.model_dump(mode="json"))
    else:
        state = "PASSED" if report.passed else "FAILED"
        rows = sum(t.get("rows", 0) for t in report.tables.values())
        print(
            f"verification {state}: backup {report.backup_id} of {report.host} restored in "
            f"{report.restore_seconds:.1f}s; {len(report.tables)} tables, {rows} rows checked in "
            f"{report.check_seconds:.1f}s"
        )
        for p in report.problems:
            print(f"  problem: {p}")
    return 0 if report.passed else int(ExitCode.VERIFY_FAILED)


def cmd_staging_restore(args: argparse.Namespace) -> int:
    from .core.staging import staging_restore

    with _session(args) as s:
        report = staging_restore(
            s, args.target, args.host, backup_id=args.backup_id, at=args.at, raise_on_failure=False
        )
    if args.json:
        _print_json(report.model_dump(mode="json"))
    else:
        print(
            f"staging target {args.target} now runs {report.backup_id} of {report.host}: "
            f"{len(report.tables)} tables checked (PASSED), restore {report.restore_seconds:.1f}s"
            if report.passed
            else f"staging target {args.target} FAILED its checks on {report.backup_id} of {report.host} "
            "and was rolled back to its previous data"
        )
        for p in report.problems:
            print(f"  problem: {p}")
    return 0 if report.passed else int(ExitCode.VERIFY_FAILED)


def cmd_check(args: argparse.Namespace) -> int:
    from .core.integrity import check_catalog

    with _session(args) as s:
        report = check_catalog(s.catalog, args.host)
    if args.json:
        _print_json(report)
    else:
        print(
            f"{args.host}: {report['backups']} backups in {report['chains']} chains; "
            f"{len(report['problems'])} problem(s)"
        )
        for p in report["problems"]:
            print(f"  problem: {p}")
    return 0 if not report["problems"] else int(ExitCode.INTEGRITY)


def cmd_prune(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from .core.retention import prune

    with _session(args) as s:
        h = s.config.host(args.host)
        report = prune(s.catalog, args.host, h.retention, h.dump.rotation, apply=args.apply, now=datetime.now(UTC))
    if args.json:
        _print_json(report)
        return 0
    verb = "deleted" if args.apply else "would delete (dry run; --apply to delete)"
    for kind in ("physical", "dumps"):
        plan = report[kind]
        print(f"{kind}: keep {len(plan['keep'])}, {verb} {len(plan['delete'])} ({_human_bytes(plan['delete_bytes'])})")
        for bid in plan["delete"]:
            print(f"  - {bid}")
        if args.verbose:
            for bid, why in plan["keep"].items():
                print(f"  + {bid}: {'; '.join(why)}")
    if report["skipped_leased"]:
        print(f"skipped (a restore is reading them): {', '.join(report['skipped_leased'])}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from datetime import timedelta

    with _session(args) as s:
        grace = args.grace_hours if args.grace_hours is not None else s.config.orphan_grace_hours
        removed = s.catalog.cleanup_orphans(args.host, timedelta(hours=grace))
    if args.json:
        _print_json({"removed": removed})
    else:
        print(f"removed {len(removed)} orphaned object(s)")
        for k in removed:
            print(f"  {k}")
    return 0


def _stream_setup(args: argparse.Namespace) -> tuple[Any, Any, Any, int, int]:
    """Client, codec, keyring, part size, concurrency: flags first, then the config (if any)."""
    from .core.codec import codec_for
    from .core.crypto import Keyring, load_key_file
    from .core.repository.s3 import make_client

    cfg = None
    if args.config or os.environ.get(CONFIG_ENV):
        from .core.config import load_config

        cfg = load_config(args.config)
    s3 = cfg.repository.s3 if cfg else None
    endpoint = args.endpoint_url or (s3.endpoint_url if s3 else None)
    region = args.region or (s3.region if s3 else None)
    part_size = args.part_size if args.part_size is not None else (s3.part_size if s3 else 16 * 1024 * 1024)
    concurrency = args.concurrency if args.concurrency is not None else (s3.concurrency if s3 else 8)
    from .core.errors import ConfigError

    if part_size < 5 * 1024 * 1024:
        raise ConfigError(f"--part-size {part_size} is below S3's 5 MiB minimum", hint="pass at least 5242880")
    if not 1 <= concurrency <= 64:
        raise ConfigError(f"--concurrency {concurrency} is out of range", hint="pass 1 to 64")
    key_file = args.key_file or (cfg.repository.encryption_key_file if cfg and args.encrypt is not False else None)
    if args.encrypt and not key_file:
        raise ConfigError("--encrypt needs a key", hint="pass --key-file FILE or a config with encryption_key_file")
    keyring = Keyring(load_key_file(Path(key_file)) if key_file and args.encrypt is not False else None)
    compression = args.compression or (cfg.repository.compression if cfg else "none")
    client = make_client(endpoint_url=endpoint, region=region, max_pool_connections=max(16, concurrency * 2))
    return client, codec_for(compression, keyring), keyring, part_size, concurrency


def cmd_stream_put(args: argparse.Namespace) -> int:
    from .core.stream import put

    client, codec, keyring, part_size, concurrency = _stream_setup(args)
    producer = args.producer
    with _progress(True, f"put {args.url}") as bar:
        res = put(
            client,
            args.url,
            codec=codec,
            keyring=keyring,
            producer=producer or None,
            part_size=part_size,
            concurrency=concurrency,
            progress=bar,
        )
    if args.json:
        _print_json(res.__dict__)
    else:
        print(
            f"{args.url}: {_human_bytes(res.source_size)} in, {_human_bytes(res.size)} stored in "
            f"{res.parts or 1} part(s), {res.seconds:.1f}s",
            file=sys.stderr,
        )
    return 0


def cmd_stream_get(args: argparse.Namespace) -> int:
    from .core.stream import get

    client, codec, keyring, part_size, concurrency = _stream_setup(args)
    with _progress(True, f"get {args.url}") as bar:
        get(
            client,
            args.url,
            sys.stdout.buffer,
            codec=codec,
            keyring=keyring,
            part_size=part_size,
            concurrency=concurrency,
            progress=bar,
        )
    sys.stdout.buffer.flush()
    return 0


def cmd_offsite(args: argparse.Namespace) -> int:
    from .core.offsite import offsite_backup, offsite_restore, offsite_status

    if args.action == "restore":
        if not args.to:
            from .core.errors import ConfigError

            raise ConfigError(
                "offsite restore needs --to DIR", hint="pass an absent or empty directory to restore the copy into"
            )
        res = offsite_restore(_config(args), Path(args.to), args.time)
        if args.json:
            _print_json(res)
        else:
            print(
                f"offsite copy restored into {res['restored_to']} ({', '.join(res['hosts'])}) in "
                f"{res['seconds']:.1f}s. Restore a database from it with:\n  backup-pipelines "
                f"-c {args.config or '$BACKUP_PIPELINES_CONFIG'} --repository {res['repository_url']} restore "
                "--host HOST --target-datadir DIR"
            )
        return 0
    with _session(args) as s:
        res = offsite_backup(s) if args.action == "backup" else offsite_status(s)
    failed = args.action == "backup" and not res["verify"]["passed"]
    if failed:
        print(f"backup-pipelines: error: offsite verify failed: {res['verify']['message']}", file=sys.stderr)
    if args.json:
        _print_json(res)
        return int(ExitCode.VERIFY_FAILED) if failed else 0
    elif args.action == "backup":
        st = res["status"]
        print(
            f"offsite copy to {res['target']}: {res['newest_set']['type'] if res['newest_set'] else '?'} set in "
            f"{res['backup_seconds']:.1f}s; {res['verify']['message']}; {st['chain_count']} chain(s), "
            f"{st['set_count']} set(s), {st['volume_count']} volume(s), last full {st['last_full']}"
        )
    else:
        for i, chain in enumerate(res["chains"]):
            print(f"chain {i + 1}{' (primary)' if chain['primary'] else ''}:")
            for st in chain["sets"]:
                print(f"  {st['type']:<5} {st['time']}  {st['volumes']} volume(s)")
    return int(ExitCode.VERIFY_FAILED) if failed else 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from .core.crypto import generate_key_text

    print(generate_key_text())
    return 0


def cmd_demo_env(args: argparse.Namespace) -> int:
    from .demo import ensure_demo_environment, stop_demo_environment

    if args.action == "up":
        path = ensure_demo_environment(Path(args.work_dir))
        print(path)
    else:
        print("stopped" if stop_demo_environment(Path(args.work_dir)) else "not running")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.work_dir), rows=args.rows, keep=args.keep)


# -- parser --------------------------------------------------------------------------
_AT_HELP = (
    "the newest backup finished at or before this ISO 8601 time, e.g. 2026-11-20T04:00:00Z; "
    "a time without a zone is UTC (default: the newest backup)"
)
_BACKUP_ID_HELP = "a backup id as printed by `list` (default: the newest completed backup)"


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    from .core.errors import exit_code_table

    try:
        ver = version("backup-pipelines")
    except PackageNotFoundError:
        ver = "unknown"
    p = argparse.ArgumentParser(
        prog="backup-pipelines",
        description="Hot MySQL/MariaDB backups into a file or S3 repository; restores and verification.",
        epilog="exit codes (docs/exit-codes.md):\n" + exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {ver}")
    p.add_argument("-c", "--config", help=f"config YAML (default: ${CONFIG_ENV})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    p.add_argument("--repository", help="override repository.url (e.g. file:///restored/offsite/copy)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("backup", help="take a backup")
    bsub = b.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in (
        ("full", "a full physical (base) backup"),
        ("incremental", "an incremental on top of the newest completed backup"),
    ):
        k = bsub.add_parser(kind, help=text)
        k.add_argument("--host", required=True)
        k.add_argument("--json", action="store_true", help="print the new catalog entry as JSON")
        k.set_defaults(func=cmd_backup)

    k = bsub.add_parser("dump", help="a logical dump (mysqldump or mydumper), one file per database")
    k.add_argument("--host", required=True)
    k.add_argument("--for-date", help="the date the dump is for (rotation); default today")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_dump)

    rd = sub.add_parser("restore-dump", help="load a logical dump into a running server")
    rd.add_argument("--host", required=True, help="whose dump")
    rd.add_argument("--target-host", required=True, help="a configured host or staging target to load into")
    rd.add_argument("--backup-id")
    rd.add_argument("--database", help="only this database (default: all in the dump)")
    rd.add_argument("--grants", action="store_true", help="also load users and grants")
    rd.add_argument("--force", action="store_true", help="overwrite existing databases on a non-staging target")
    rd.add_argument("--json", action="store_true")
    rd.set_defaults(func=cmd_restore_dump)

    ls = sub.add_parser("list", help="completed backups, oldest first")
    ls.add_argument("--host", required=True)
    ls.add_argument("--kind", action="append", choices=["full", "incremental", "dump"])
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    r = sub.add_parser(
        "restore",
        help="restore a point into an empty datadir",
        description="Fetch, decrypt and prepare a backup chain into a new datadir. Without --backup-id or --at "
        "the newest completed backup is restored.",
    )
    r.add_argument("--host", required=True, help="whose backups (a configured host, or one in the repository)")
    r.add_argument("--target-datadir", required=True, help="an absent or empty directory to restore into")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--backup-id", help=_BACKUP_ID_HELP)
    g.add_argument(
        "--at",
        help="an ISO 8601 time, e.g. 2026-11-20T04:00:00Z; a time without a zone is UTC: exactly that second by "
        "binlog replay where binlogs are archived, else the newest backup finished at or before it "
        "(default: the newest backup)",
    )
    g.add_argument("--gtid", help="replay the archived binlogs up to and including this GTID (domain-server-seq)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=cmd_restore)

    v = sub.add_parser(
        "verify",
        help="restore into a sandbox, start a server, check every table",
        description="Restore a backup into a temporary sandbox under work_dir, start a private server on it, run "
        "CHECK TABLE, count and checksum every table, and store the report. Without --backup-id or --at the "
        "newest completed backup is verified. Exits 7 when a problem is found.",
    )
    v.add_argument("--host", required=True, help="whose backups")
    g = v.add_mutually_exclusive_group()
    g.add_argument("--backup-id", help=_BACKUP_ID_HELP)
    g.add_argument("--at", help=_AT_HELP)
    v.add_argument("--json", action="store_true", help="print the verification report as JSON")
    v.set_defaults(func=cmd_verify)

    st = sub.add_parser("staging-restore", help="stop a staging server, restore a point into it, start, check")
    st.add_argument("--target", required=True, help="a staging: entry of the config (must say staging: true)")
    st.add_argument("--host", required=True, help="whose backups to restore")
    g = st.add_mutually_exclusive_group()
    g.add_argument("--backup-id", help=_BACKUP_ID_HELP)
    g.add_argument("--at", help=_AT_HELP)
    st.add_argument("--json", action="store_true", help="print the verification report as JSON")
    st.set_defaults(func=cmd_staging_restore)

    c = sub.add_parser("check", help="catalog integrity: checksums, objects present, LSN continuity")
    c.add_argument("--host", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    pr = sub.add_parser("prune", help="apply the host's retention policy (dry run unless --apply)")
    pr.add_argument("--host", required=True)
    pr.add_argument("--apply", action="store_true", help="really delete (default: show what would go)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_prune)

    cl = sub.add_parser("cleanup", help="remove objects left by interrupted runs")
    cl.add_argument("--host", required=True)
    cl.add_argument("--grace-hours", type=_non_negative, help="only older than this (default: config)")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_cleanup)

    stream = sub.add_parser(
        "stream",
        help="stream stdin to S3 and back (what gof3r did), on the backup uploader",
        description="put: stdin (or a producer command) to one S3 object, compressed and encrypted as asked, "
        "every part checksummed. get: the object to stdout, verified end to end. Settings not given as flags "
        "come from the config (-c or $BACKUP_PIPELINES_CONFIG) when there is one. Credentials come from the "
        "usual AWS sources (environment, profile, instance role), never from flags.",
    )
    ssub = stream.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    for direction, text in (
        ("put", "stdin (or a producer after --) to s3://bucket/key"),
        ("get", "s3://bucket/key to stdout, verified"),
    ):
        sp = ssub.add_parser(direction, help=text)
        sp.add_argument("url", help="s3://bucket/key (the key is taken literally)")
        sp.add_argument(
            "--endpoint-url", help="http(s)://host[:port] of an S3-compatible server (default: the config's, else AWS)"
        )
        sp.add_argument("--region", help="S3 region (default: the config's, else the AWS default)")
        sp.add_argument("--part-size", type=int, help="bytes per part (default 16 MiB; grows past 10,000 parts)")
        sp.add_argument("--concurrency", type=int, help="parts in flight (memory = concurrency x part size)")
        sp.add_argument("--compression", choices=["zstd", "none"], help="default: the config's, else none")
        enc = sp.add_mutually_exclusive_group()
        enc.add_argument("--encrypt", action="store_true", default=None, help="AES-256-GCM with the repository key")
        enc.add_argument(
            "--no-encrypt", dest="encrypt", action="store_false", help="do not encrypt even if the config has a key"
        )
        sp.add_argument("--key-file", help="repository key (default: the config's encryption_key_file)")
        if direction == "put":
            sp.add_argument("--json", action="store_true", help="print the upload summary as JSON on stdout")
            sp.epilog = "After the options, `-- CMD ARGS` runs the producer itself: its failure aborts the upload."
            sp.set_defaults(func=cmd_stream_put, producer=None)
        else:
            sp.set_defaults(func=cmd_stream_get)

    off = sub.add_parser("offsite", help="the duplicity copy of the repository: backup, status, restore")
    off.add_argument("action", choices=["backup", "status", "restore"])
    off.add_argument("--to", help="restore: an absent or empty directory to restore the repository copy into")
    off.add_argument("--time", help="restore: the copy as of this time (duplicity syntax: 2026-11-20T04:00:00, 3D)")
    off.add_argument("--json", action="store_true")
    off.set_defaults(func=cmd_offsite)

    from .binlog_cli import add_parsers as add_binlog_parsers

    add_binlog_parsers(sub)

    kg = sub.add_parser("keygen", help="print a new repository encryption key")
    kg.set_defaults(func=cmd_keygen)

    d = sub.add_parser("demo", help="full + 2 incrementals + restore + verify on a throwaway local MariaDB")
    d.add_argument("--work-dir", default=".demo/run")
    d.add_argument("--rows", type=int, default=20000)
    d.add_argument("--keep", action="store_true", help="keep the demo's server data and repository")
    d.set_defaults(func=cmd_demo)

    de = sub.add_parser("demo-env", help="a persistent demo estate (server, config, keys) for the Dagster UI")
    de.add_argument("action", choices=["up", "down"])
    de.add_argument("--work-dir", default=os.environ.get("BACKUP_PIPELINES_DEMO_DIR", ".demo/dagster"))
    de.set_defaults(func=cmd_demo_env)
    return p


_PATH_ERRORS = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


class Terminated(BaseException):
    """SIGTERM (a worker deadline, systemd, Dagster) unwinds like Ctrl-C: tools are killed, temp files go."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    producer = None
    if "--" in argv and "stream" in argv[: argv.index("--")]:
        cut = argv.index("--")
        argv, producer = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if producer is not None:
        args.producer = producer
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except BackupPipelinesError as err:
        print(f"backup-pipelines: error: {err.render()}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("backup-pipelines: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("backup-pipelines: terminated (SIGTERM); running tools were stopped", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 141
    except OSError as err:  # a path the operator gave (or the config names) cannot be used
        code = ExitCode.USAGE if isinstance(err, _PATH_ERRORS) else ExitCode.STORAGE
        where = f" {err.filename}" if err.filename else ""
        print(
            f"backup-pipelines: error: cannot use{where}: {err.strerror or err}.\n"
            "  what to do: check the path exists, is the right kind (file or directory), is writable by this "
            "user and its filesystem has space",
            file=sys.stderr,
        )
        return int(code)
    except Exception as err:
        if args.verbose:
            traceback.print_exc()
        again = "the traceback is above" if args.verbose else "re-run with -v for a traceback"
        print(
            f"backup-pipelines: internal error: {type(err).__name__}: {err} ({again}, and report it)",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
