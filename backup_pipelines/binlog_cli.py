"""The `binlog` commands of the CLI (push, stream, status) and the point-in-time hooks of `restore` and `list`.

Kept apart from cli.py so the binlog work plugs in with a few lines there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _session(args: argparse.Namespace) -> Any:
    from .cli import _session as open_session

    return open_session(args)


def cmd_binlog_push(args: argparse.Namespace) -> int:
    from .core.binlog.push import push, raise_for_gaps

    with _session(args) as s:
        res = push(s, args.host)
    if args.json:
        _print_json(res.summary())
    else:
        print(
            f"binlog push of {res.host} (server id {res.server_id}): {len(res.archived)} new segment(s) in "
            f"{res.seconds:.1f}s; latest restorable time {res.latest_restorable or 'none'}"
        )
        for a in res.archived:
            print(f"  + {a['file']} [{a['start']}, {a['end']})")
    raise_for_gaps(res)
    return 0


def cmd_binlog_stream(args: argparse.Namespace) -> int:
    from .core.binlog.stream import stop_on_signals, stream

    stop = stop_on_signals()  # before the session opens: a SIGTERM during start-up still ends cleanly
    with _session(args) as s:
        stream(s, args.host, interval=args.interval, max_seconds=args.max_seconds, stop=stop)
    return 0


def binlog_status(s: Any, host: str) -> dict[str, Any]:
    from .core.binlog.continuity import iso
    from .core.binlog.index import BinlogIndex
    from .core.binlog.push import continuity_gaps

    index = BinlogIndex(s.catalog)
    instances = index.instances(host)
    gaps, latest = continuity_gaps(s, index, host)
    newest = max((seg.last_time or 0 for i in instances for seg in i.segments), default=0)
    return {
        "host": host,
        "latest_restorable": iso(latest) if latest is not None else None,
        "newest_archived_event": iso(newest) if newest else None,
        "gaps": gaps,
        "files": [
            {
                "file": i.file,
                "server_id": i.server_id,
                "created": iso(i.created),
                "archived_bytes": i.contiguous_end,
                "segments": len(i.segments),
                "closed": i.closed,
            }
            for i in instances
        ],
    }


def cmd_binlog_status(args: argparse.Namespace) -> int:
    with _session(args) as s:
        st = binlog_status(s, args.host)
    if args.json:
        _print_json(st)
    else:
        print(f"{args.host}: latest restorable time {st['latest_restorable'] or 'none'}; {len(st['gaps'])} gap(s)")
        for g in st["gaps"]:
            print(f"  gap: {g}")
    return 4 if st["gaps"] else 0


def binlog_summary(s: Any, host: str) -> dict[str, Any] | None:
    """`list --json`'s binlog part: the latest restorable time and any gaps; None without archived binlogs."""
    from .core.binlog.index import has_binlogs

    if not has_binlogs(s.catalog, host):
        return None
    st = binlog_status(s, host)
    return {k: st[k] for k in ("latest_restorable", "newest_archived_event", "gaps")}


def print_binlog_footer(s: Any, host: str) -> None:
    """`list`'s last lines where binlogs are archived: the latest restorable time and any gaps."""
    from .core.binlog.index import has_binlogs

    if not has_binlogs(s.catalog, host):
        return
    st = binlog_status(s, host)
    print(f"binlogs: latest restorable time {st['latest_restorable'] or 'none'} (binlog status --json for details)")
    for g in st["gaps"]:
        print(f"  gap: {g}")


def restore_point(args: argparse.Namespace, s: Any, bar: Any) -> Any:
    """`restore --at/--gtid` by binlog replay where the host has archived binlogs; None otherwise."""
    from .core.binlog.index import has_binlogs

    if args.gtid is None and (args.at is None or not has_binlogs(s.catalog, args.host)):
        return None
    from .core.binlog.replay import restore_point as run  # with pymysql: only when replaying

    return run(s, args.host, Path(args.target_datadir), at=args.at, gtid=args.gtid, progress=bar)


def add_parsers(sub: Any) -> None:
    bl = sub.add_parser("binlog", help="archive binary logs for point-in-time recovery (push, stream, status)")
    bsub = bl.add_subparsers(dest="binlog_action", required=True, metavar="ACTION")
    p = bsub.add_parser("push", help="one shot: archive every binlog byte not archived yet (exit 4 on a gap)")
    p.add_argument("--host", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_binlog_push)
    st = bsub.add_parser("stream", help="long-running archiver: segments of the active binlog every few seconds")
    st.add_argument("--host", required=True)
    st.add_argument("--interval", type=float, default=2.0, help="seconds between segment uploads (default 2)")
    st.add_argument("--max-seconds", type=float, help="stop (as on SIGTERM) after this long; default: never")
    st.set_defaults(func=cmd_binlog_stream)
    ss = bsub.add_parser("status", help="latest restorable time, gaps and archived files (exit 4 on a gap)")
    ss.add_argument("--host", required=True)
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(func=cmd_binlog_status)
