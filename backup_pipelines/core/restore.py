"""Backup fetch: chain -> verified bytes -> extracted -> prepared -> moved into a datadir.

Nothing touches the target until every object of the chain has been fetched, its
sha256 checked against the manifest, decrypted, extracted and the chain prepared.
The work happens in a hidden sibling of the target so the final move is a rename on
the same filesystem, and the sibling is removed whatever the outcome.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .catalog import BackupManifest, StoredObject
from .codec import Buffer, Digest, Stage, decode_stages
from .engines import SUCCESS_MARKER, PhysicalEngine, engine_named
from .errors import BackupPipelinesError, ChainError, IntegrityError, RefusedError, ToolError, WrongKeyError
from .handoff import Handoff
from .process import PipeFeeder, Tool, describe, run
from .session import Session

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (bytes done, bytes total)
FETCH_WORKERS = 2  # the base is the critical path: one more link at a time beside it, not more


@dataclass
class RestoreResult:
    host: str
    backup_id: str
    chain: list[str]
    target: str
    fetched_bytes: int
    fetch_seconds: float
    prepare_seconds: float
    copy_back_seconds: float
    finished_at: str | None = None
    binlog: dict[str, object] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.fetch_seconds + self.prepare_seconds + self.copy_back_seconds


def check_target(target: Path) -> None:
    """A restore never overwrites anything: the target must be absent or an empty directory."""
    if not target.exists():
        if target.is_symlink():
            raise RefusedError(f"restore target {target} is a dangling symlink; refusing")
        return
    if not target.is_dir():
        raise RefusedError(
            f"restore target {target} exists and is not a directory; refusing to touch it",
            hint="choose a new, empty --target-datadir",
        )
    if any(target.iterdir()):
        raise RefusedError(
            f"restore target {target} is not empty; refusing to touch it",
            hint="restore into a new empty directory, or move the old datadir aside yourself first",
        )


class _Guard:
    """Feeds the decode chain but keeps the digest running if the chain fails.

    A flipped byte usually makes decompression or extraction fail first; finishing
    the checksum lets the error say what really happened (the object is corrupt).
    A wrong key is certain from the first header, so it stops at once.
    """

    def __init__(self, downstream: Stage) -> None:
        self._down = downstream
        self.error: BaseException | None = None

    def write(self, data: Buffer) -> int:
        if self.error is None:
            try:
                self._down.write(data)
            except WrongKeyError:
                raise
            except (BackupPipelinesError, OSError) as err:
                self.error = err
        return len(data)

    def finish(self) -> None:
        if self.error is None:
            self._down.finish()


def fetch_object(
    session: Session,
    m: BackupManifest,
    sink: Stage,
    *,
    obj: StoredObject | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream one of the backup's objects (default: its data), verified, decrypted, decompressed, into `sink`."""
    obj = obj or m.objects[0]
    where = session.repo.describe(obj.key)
    guard = _Guard(decode_stages(m.codec, session.keyring, sink, what=f"object {where}"))
    # The checksum runs in the reading thread, decryption and decompression in one of their own
    # behind it: on the critical path of a restore (the base) the two overlap.
    handoff = Handoff(guard, name="decode")
    digest = Digest(handoff)

    def feed(chunk: memoryview) -> None:
        digest.write(chunk)
        if progress:
            progress(len(chunk))

    try:
        session.repo.read_into(obj.key, feed)
        handoff.drain()
    except BaseException as err:
        handoff.close()
        if isinstance(err, BackupPipelinesError):
            err.host, err.backup_id = err.host or m.host, err.backup_id or m.id
        raise
    if digest.size != obj.size or digest.sha256 != obj.sha256:
        raise IntegrityError(
            f"checksum mismatch: the stored object has sha256 {digest.sha256[:16]}... and "
            f"{digest.size} bytes, the manifest recorded {obj.sha256[:16]}... and {obj.size} bytes",
            host=m.host,
            backup_id=m.id,
            key=where,
            hint="the stored object is corrupt: restore an earlier chain or the offsite copy, and "
            "take a new full backup",
        )
    if guard.error is not None:
        err = guard.error
        if isinstance(err, BackupPipelinesError):
            err.host, err.backup_id = err.host or m.host, err.backup_id or m.id
        raise err
    guard.finish()
    return digest.size


def _extract(
    session: Session,
    engine: PhysicalEngine,
    m: BackupManifest,
    dest: Path,
    progress: Callable[[int], None] | None,
) -> int:
    dest.mkdir(parents=True)
    cmd = engine.extract_command(dest)
    engine.resolve(cmd[0])
    return fetch_into_command(session, m, cmd, what=f"extracting backup {m.id}", progress=progress)


def fetch_into_command(
    session: Session,
    m: BackupManifest,
    cmd: list[str],
    *,
    what: str,
    obj: StoredObject | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream one of the backup's objects (as `fetch_object`) into the stdin of `cmd`, which must exit 0.

    The pipe is fed from a thread so decoding overlaps the consumer. A consumer that dies early
    is reported with its own exit status and stderr; any other failure kills it.
    """
    with Tool(
        cmd,
        what=what,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        host=m.host,
        backup_id=m.id,
    ) as tool:
        assert tool.proc.stdin is not None
        feeder = PipeFeeder(tool.proc.stdin)
        try:
            n = fetch_object(session, m, feeder, obj=obj, progress=progress)
        except OSError as err:  # BrokenPipe: the consumer died; its stderr says why
            feeder.abandon()
            tool.wait()
            tool.check()
            raise ToolError(f"{what} failed: {err}", host=m.host, backup_id=m.id) from None
        except BaseException:
            feeder.abandon()
            tool.kill()
            raise
        tool.check()
    return n


def restore_engine(session: Session, host: str, chain: list[BackupManifest]) -> PhysicalEngine:
    """The engine recorded in the chain's manifests, whatever the host is configured with today."""
    engines = {m.engine for m in chain}
    if len(engines) > 1:
        raise ChainError(
            f"the chain of {chain[-1].id} mixes engines ({', '.join(sorted(engines))}); one tool cannot prepare it",
            host=host,
            backup_id=chain[-1].id,
            hint="restore a point whose chain one engine took (`list` shows them)",
        )
    return engine_named(chain[0].engine, session.config.hosts.get(host))


def _settle(futures: list[Future[int]]) -> None:
    """Wait for every extraction (cancelling those not started) and raise the first error of any.

    Each future is awaited by itself, so no extraction's error is lost: the first (in chain
    order) is raised, later ones are attached to it as notes, and the error that ended the
    prepare, if any, stays its context.
    """
    errors: list[BaseException] = []
    for f in futures:
        if f.cancel():
            continue
        err = f.exception()  # blocks until that extraction has ended
        if err is not None:
            errors.append(err)
    if not errors:
        return
    first = errors[0]
    for other in errors[1:]:
        first.add_note(f"also: {other}")
    raise first


def restore_chain(
    session: Session,
    host: str,
    target: Path,
    *,
    backup_id: str | None = None,
    at: datetime | str | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    target = Path(target).absolute()
    check_target(target)
    catalog = session.catalog
    wanted = catalog.resolve(host, backup_id=backup_id, at=at)
    chain = catalog.chain(host, wanted.id)
    engine = restore_engine(session, host, chain)
    total = sum(o.size for m in chain for o in m.objects)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.bp-restore-{uuid.uuid4().hex[:8]}"
    log.info("restoring %s of %s (chain of %d) into %s", wanted.id, host, len(chain), target)
    with catalog.lease(host, [m.id for m in chain], purpose=f"restore into {target}"):
        try:
            work.mkdir(mode=0o700)
            t0 = time.monotonic()
            dirs = [work / f"{i:03d}-{m.kind}" for i, m in enumerate(chain)]
            # Fetch and extract every link concurrently; prepare each step as soon as the links it
            # reads are on disk, so preparing the base overlaps downloading the incrementals.
            with (
                ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(chain)), thread_name_prefix="fetch") as pool,
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanup") as cleaner,
            ):
                futures = [pool.submit(_extract, session, engine, m, d, tick) for m, d in zip(chain, dirs, strict=True)]
                try:
                    t1 = t0
                    for step, cmd in enumerate(engine.prepare_commands(dirs[0], dirs[1:])):
                        needs = min(step, len(dirs) - 1)  # step i reads link i (see prepare_commands)
                        for f in futures[: needs + 1]:
                            f.result()
                        if needs == len(dirs) - 1 and t1 == t0:
                            t1 = time.monotonic()
                        engine.resolve(cmd[0])
                        run(
                            cmd,
                            what=f"preparing backup {wanted.id} ({describe(cmd[2:4])})",
                            marker=SUCCESS_MARKER,
                            host=host,
                            backup_id=wanted.id,
                        )
                        if 0 < step < len(dirs):  # an applied incremental is not read again: free its space now
                            cleaner.submit(shutil.rmtree, dirs[step], ignore_errors=True)
                    for f in futures:  # an engine with fewer steps than links still has every link checked
                        f.result()
                finally:
                    _settle(futures)
            t2 = time.monotonic()
            check_target(target)  # again: nothing may have appeared meanwhile
            cmd = engine.copy_back_command(dirs[0], target, work)
            run(
                cmd,
                what=f"moving backup {wanted.id} into {target}",
                marker=SUCCESS_MARKER,
                host=host,
                backup_id=wanted.id,
            )
            t3 = time.monotonic()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return RestoreResult(
        host=host,
        backup_id=wanted.id,
        chain=[m.id for m in chain],
        target=str(target),
        fetched_bytes=total,
        fetch_seconds=round(t1 - t0, 3),
        prepare_seconds=round(t2 - t1, 3),
        copy_back_seconds=round(t3 - t2, 3),
        finished_at=wanted.finished_at.isoformat(),
        binlog=wanted.binlog.model_dump() if wanted.binlog else None,
    )
