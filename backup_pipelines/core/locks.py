"""One backup at a time per host, enforced on the host that runs the backup tool.

Two backup tools copying the same datadir at once would both succeed and double the
load; an incremental racing a full could chain to the wrong parent. The lock is an
flock on a file in the work dir, so it dies with the process that held it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .errors import LockedError


@contextlib.contextmanager
def host_lock(work_dir: Path, host: str, purpose: str) -> Iterator[Path]:
    lock_dir = work_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{host}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (held by {json.loads(os.pread(fd, 4096, 0) or b'{}')})"
            raise LockedError(
                f"another backup of host {host} is running{holder}",
                host=host,
                hint="wait for it to finish; runs are serialised per host",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps({"pid": os.getpid(), "purpose": purpose, "since": datetime.now(UTC).isoformat()}).encode(),
            0,
        )
        yield path
    finally:
        os.close(fd)
