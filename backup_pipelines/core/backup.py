"""Backup push: the physical backup pipeline, run on the database host.

    backup tool --stream=xbstream  ->  zstd  ->  AES-256-GCM  ->  sha256  ->  repository writer

The data object is committed only after the tool exited 0 *and* printed its success
line; the manifest is written after that and is the commit point. Anything that goes
wrong before it aborts the upload, so a failed run is never listed and the next
incremental chains to the last good backup.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from .catalog import BackupManifest, BinlogInfo, EncryptionInfo, StoredObject, new_backup_id
from .credentials import defaults_extra_file
from .engines import SUCCESS_MARKER, engine_for, parse_checkpoints, parse_tool_info
from .errors import ChainError, IntegrityError, NotFoundError
from .locks import host_lock
from .pipeline import stream_command
from .session import Session

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def run_physical_backup(
    session: Session,
    host: str,
    kind: Literal["full", "incremental"],
    *,
    progress: Progress | None = None,
    labels: dict[str, str] | None = None,
) -> BackupManifest:
    cfg = session.config
    hcfg = cfg.host(host)
    engine = engine_for(hcfg)
    catalog = session.catalog
    codec = session.codec
    cfg.work_dir.mkdir(parents=True, exist_ok=True)

    started = datetime.now(UTC)
    backup_id = new_backup_id(kind, started)
    with (
        host_lock(cfg.work_dir, host, f"backup {kind}", kind="physical"),  # a full and an incremental never overlap
        catalog.lease(host, [backup_id], purpose=f"{kind} backup") as lease,  # cleanup anywhere leaves it alone
    ):
        removed = catalog.cleanup_orphans(host, timedelta(hours=cfg.orphan_grace_hours))
        if removed:
            log.info("removed %d orphaned object(s) of interrupted runs of %s", len(removed), host)

        parent: BackupManifest | None = None
        if kind == "incremental":
            parent = catalog.latest(host)
            if parent is None:
                raise NotFoundError(
                    f"host {host} has no completed backup to take an incremental from",
                    host=host,
                    hint=f"take a full backup first: backup-pipelines backup full --host {host}",
                )
            ancestry = catalog.chain(host, parent.id)  # refuse to extend a broken chain
            lease.extend([m.id for m in ancestry])  # and keep prune elsewhere off it until committed
            if parent.to_lsn is None:
                raise ChainError(f"parent {parent.id} records no to_lsn", host=host, backup_id=parent.id)

        data_key = catalog.object_key(host, backup_id, f"data.{engine.stream_format}{codec.suffix}")
        t0 = time.monotonic()

        with (
            tempfile.TemporaryDirectory(prefix=f"bp-{host}-", dir=cfg.work_dir) as scratch,
            defaults_extra_file(hcfg.user, hcfg.password_file, host=host, work_dir=cfg.work_dir) as creds,
        ):
            lsn_dir = Path(scratch) / "lsn"
            lsn_dir.mkdir()
            cmd = engine.backup_command(
                defaults_file=creds,
                lsn_dir=lsn_dir,
                incremental_lsn=parent.to_lsn if parent else None,
            )
            engine.resolve(cmd[0])
            streamed = stream_command(
                session,
                cmd,
                data_key,
                what=f"{kind} backup of {host}",
                host=host,
                backup_id=backup_id,
                stderr_marker=SUCCESS_MARKER,
                progress=progress,
                size_hint=catalog.size_hints(host, kind).get("data"),
                throttle=hcfg.throttle,
            )
            try:
                checkpoints = parse_checkpoints((lsn_dir / "xtrabackup_checkpoints").read_text())
                tool_info = parse_tool_info(
                    (lsn_dir / "xtrabackup_info").read_text() if (lsn_dir / "xtrabackup_info").exists() else ""
                )
            except (OSError, ValueError) as err:
                session.repo.delete([data_key])
                raise IntegrityError(
                    f"{engine.name} finished but left no usable xtrabackup_checkpoints: {err}",
                    host=host,
                    backup_id=backup_id,
                ) from None

        if parent is not None and checkpoints.from_lsn != parent.to_lsn:
            session.repo.delete([data_key])
            raise ChainError(
                f"incremental starts at LSN {checkpoints.from_lsn}, parent {parent.id} ends at {parent.to_lsn}",
                host=host,
                backup_id=backup_id,
            )
        finished = datetime.now(UTC)
        manifest = BackupManifest(
            id=backup_id,
            host=host,
            kind=kind,
            parent_id=parent.id if parent else None,
            chain_id=(parent.chain_id or parent.id) if parent else backup_id,
            engine=engine.name,
            tool_version=tool_info.tool_version,
            server_version=tool_info.server_version,
            from_lsn=checkpoints.from_lsn,
            to_lsn=checkpoints.to_lsn,
            last_lsn=checkpoints.last_lsn,
            started_at=started,
            finished_at=finished,
            duration_seconds=round(time.monotonic() - t0, 3),
            size_bytes=streamed.size,
            source_size_bytes=streamed.source_size,
            compression=codec.compression,
            compression_level=codec.level if codec.compression != "none" else None,
            encryption=EncryptionInfo(scheme=codec.encryption, key_id=session.keyring.current.key_id)
            if codec.encryption and session.keyring.current
            else None,
            objects=[
                StoredObject(
                    name="data",
                    key=data_key,
                    size=streamed.size,
                    sha256=streamed.sha256,
                    source_size=streamed.source_size,
                )
            ],
            binlog=BinlogInfo(**tool_info.binlog.__dict__) if tool_info.binlog else None,
            labels=labels or {},
        )
        catalog.commit_manifest(manifest)  # the commit point, once its objects are confirmed
        log.info("%s backup %s of %s committed: %d bytes stored", kind, backup_id, host, streamed.size)
        return manifest
