"""The one way this package opens a client connection to a configured MySQL/MariaDB server.

The password comes from its 0600 file (never argv or the environment), a socket wins over
host/port, and every connection is autocommit with a bounded connect timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql

from .config import read_secret_file


def connect(
    user: str,
    password_file: Path | None,
    *,
    socket: Path | None,
    host: str | None,
    port: int | None,
    database: str | None = None,
    connect_timeout: float = 10,
    what: str = "MySQL password",
) -> pymysql.connections.Connection:
    password = read_secret_file(password_file, what) if password_file else ""
    kw: dict[str, Any] = {"user": user, "password": password, "connect_timeout": connect_timeout, "autocommit": True}
    if socket is not None:
        kw["unix_socket"] = str(socket)
    else:
        kw["host"], kw["port"] = host or "127.0.0.1", port or 3306
    if database:
        kw["database"] = database
    return pymysql.connect(**kw)
