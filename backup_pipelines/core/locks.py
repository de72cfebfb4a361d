"""Per-host run locks on the worker that runs the tool, one lock per kind of work.

Two backup tools copying the same datadir at once would both succeed and double the
load; an incremental racing a full could chain to the wrong parent. So full and
incremental backups share the `physical` lock. A logical dump reads through the server
and never touches the physical chain, so it takes the `dump` lock: a four-hour nightly
dump never delays the incrementals of its host. The lock is an flock on a file in the
work dir, so it dies with the process that held it; a second run of the same kind
fails at once with exit 9 (LockedError) rather than queueing behind the first.

Locks are local to one worker; the repository-side guard for in-flight work (which
cleanup on any other worker honours) is the lease, see `leases.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .errors import LockedError

LockKind = Literal["physical", "dump"]
_WHAT = {"physical": "physical backup", "dump": "logical dump"}


def lock_path(work_dir: Path, host: str, kind: LockKind) -> Path:
    # The physical lock keeps its historical name, so an upgrade mid-run still excludes the old process.
    name = f"{host}.lock" if kind == "physical" else f"{host}.{kind}.lock"
    return work_dir / "locks" / name


@contextlib.contextmanager
def host_lock(work_dir: Path, host: str, purpose: str, kind: LockKind = "physical") -> Iterator[Path]:
    path = lock_path(work_dir, host, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (held by {json.loads(os.pread(fd, 4096, 0) or b'{}')})"
            raise LockedError(
                f"another {_WHAT[kind]} of host {host} is running{holder}",
                host=host,
                hint=f"wait for it to finish; {_WHAT[kind]}s of one host run one at a time (lock {path})",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {"pid": os.getpid(), "purpose": purpose, "kind": kind, "since": datetime.now(UTC).isoformat()}
            ).encode(),
            0,
        )
        yield path
    finally:
        os.close(fd)
