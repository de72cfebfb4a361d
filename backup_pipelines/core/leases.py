"""Leases: repository objects that say "a run is using these backups right now".

Workers of one repository may be on different machines, so a local lock cannot tell a
cleanup on another worker that a backup is still being written. A lease is a small
object under `hosts/<host>/leases/`, written before the run writes anything else and
rewritten every `ttl / 4` seconds by a thread while the run lives. A run that dies stops
renewing: its lease lapses after `ttl` (two minutes by default) and cleanup may then
remove its leftovers, grace permitting. A lease is live while either clock says so
(the holder's `expires_at`, or the repository's modification time plus `ttl`), so
clock skew between workers errs towards keeping data.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import BackupPipelinesError

if TYPE_CHECKING:
    from .catalog import Catalog

log = logging.getLogger(__name__)
DEFAULT_TTL = 120.0


class Lease:
    """A renewed lease; `start()` writes it, `stop()` ends renewal and removes it."""

    def __init__(self, catalog: Catalog, host: str, backup_ids: list[str], *, purpose: str, ttl: float) -> None:
        self.catalog = catalog
        self.key = f"{catalog.host_prefix(host)}leases/{uuid.uuid4().hex}.json"
        self.backup_ids = list(backup_ids)
        self.purpose = purpose
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)

    def _doc(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "backup_ids": self.backup_ids,
            "purpose": self.purpose,
            "holder": f"{socket.gethostname()}:{os.getpid()}",
            "ttl_seconds": self.ttl,
            "renewed_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=self.ttl)).isoformat(),
        }

    def write(self) -> None:
        self.catalog.repo.put_bytes(self.key, self.catalog.seal_json(self._doc()))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.write()
            except BackupPipelinesError as err:  # keep trying; the manifest's object check is the backstop
                log.warning("could not renew lease %s (%s): %s", self.key, self.purpose, err)

    def extend(self, backup_ids: list[str]) -> None:
        """Name more backups (an incremental's parent chain, once resolved) and rewrite at once."""
        self.backup_ids = sorted(set(self.backup_ids) | set(backup_ids))
        self.write()

    def start(self) -> Lease:
        self.write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.catalog.repo.delete([self.key])


def is_live(doc: dict[str, Any], modified: datetime | None, now: datetime) -> bool:
    expires = datetime.fromisoformat(str(doc["expires_at"]).replace("Z", "+00:00"))
    if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) > now:
        return True
    ttl = float(doc.get("ttl_seconds") or 0)
    return modified is not None and ttl > 0 and modified + timedelta(seconds=ttl) > now
