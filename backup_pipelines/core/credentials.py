"""MySQL credentials handed to tools through a private option file, never argv.

The file lives in a 0700 directory, is created 0600 before any secret is written,
and is removed when the block exits, whatever happens inside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .config import read_secret_file
from .errors import ConfigError

PREFIX = "bp-cred-"
# Option groups every tool we drive reads its connection options from.
GROUPS = ("client", "mariabackup", "mariadb-backup", "xtrabackup", "mysqldump", "mariadb-dump", "mydumper")


def _quote(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ConfigError("a MySQL password must not contain a newline")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_option_file(user: str, password: str | None, groups: tuple[str, ...] = GROUPS) -> str:
    body = [f"user={_quote(user)}"]
    if password is not None:
        body.append(f"password={_quote(password)}")
    return "".join(f"[{g}]\n" + "\n".join(body) + "\n" for g in groups)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def sweep_stale(work_dir: Path | None) -> list[Path]:
    """Remove credential directories whose run was killed before its cleanup could run (SIGKILL, OOM).

    Each directory is named after the pid that made it; one whose process is gone, or an
    unnamed one (older releases) untouched for a day, holds a password nobody will remove.
    """
    base = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    for d in base.glob(f"{PREFIX}*"):
        pid_text = d.name[len(PREFIX) :].partition("-")[0]
        try:
            stale = not _alive(int(pid_text)) if pid_text.isdigit() else time.time() - d.lstat().st_mtime > 86400
            if not stale or not d.is_dir() or d.is_symlink() or d.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


@contextlib.contextmanager
def defaults_extra_file(
    user: str,
    password_file: Path | None,
    *,
    host: str | None = None,
    work_dir: Path | None = None,
    groups: tuple[str, ...] = GROUPS,
) -> Iterator[Path]:
    """Yield the path of a 0600 option file holding `user` and the password from `password_file`."""
    password = read_secret_file(password_file, "MySQL password", host=host) if password_file else None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale(work_dir)
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=work_dir))
    path = d / "client.cnf"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render_option_file(user, password, groups))
        yield path
    finally:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            d.rmdir()
