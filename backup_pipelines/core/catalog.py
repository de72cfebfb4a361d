"""The backup catalog: one manifest object per backup, written last as the commit point.

Layout under the repository root:

    hosts/<host>/backups/<id>/data.<format>[.zst][.enc]   the backup stream(s)
    hosts/<host>/backups/<id>/manifest.json               commit point (encrypted when a key is set)
    hosts/<host>/verifications/<id>/<timestamp>.json      restore-verification reports
    hosts/<host>/leases/<uuid>.json                        runs in progress: backups being written
                                                           (cleanup keeps them) or read (prune keeps them)

A backup directory without a manifest is an interrupted run: never listed, and
removed by `cleanup_orphans` once older than the grace period and no live lease names it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .codec import Codec
from .config import HOST_NAME
from .crypto import SCHEME, Keyring, decrypt_bytes, encrypt_bytes, peek_key_id
from .errors import ChainError, ConfigError, IntegrityError, NotFoundError, StorageError, WrongKeyError
from .leases import DEFAULT_TTL, Lease, is_live
from .repository import Repository

Kind = Literal["full", "incremental", "dump"]
PHYSICAL: tuple[Kind, ...] = ("full", "incremental")
MANIFEST = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StoredObject(_Model):
    name: str
    key: str
    size: int
    sha256: str
    source_size: int | None = None  # bytes before compression/encryption


class BinlogInfo(_Model):
    file: str
    position: int
    gtid: str | None = None


class EncryptionInfo(_Model):
    scheme: str
    key_id: str


class BackupManifest(_Model):
    format: int = 1
    id: str
    host: str
    kind: Kind
    status: Literal["completed", "deleting"] = "completed"
    parent_id: str | None = None
    chain_id: str | None = None  # id of the full backup at the root of this chain
    engine: str
    tool_version: str | None = None
    server_version: str | None = None
    from_lsn: int | None = None
    to_lsn: int | None = None
    last_lsn: int | None = None
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    size_bytes: int
    source_size_bytes: int
    compression: str
    compression_level: int | None = None
    encryption: EncryptionInfo | None = None
    objects: list[StoredObject]
    binlog: BinlogInfo | None = None
    databases: list[str] | None = None
    labels: dict[str, str] = {}

    @property
    def codec(self) -> Codec:
        return Codec(self.compression, self.encryption.scheme if self.encryption else None)

    def summary(self) -> dict[str, Any]:
        """The catalog entry as `list --json` prints it."""
        return self.model_dump(mode="json")


class VerificationReport(_Model):
    format: int = 1
    host: str
    backup_id: str
    chain: list[str]
    started_at: datetime
    finished_at: datetime
    passed: bool
    restore_seconds: float
    check_seconds: float
    server_version: str | None = None
    tables: dict[str, dict[str, Any]]
    problems: list[str]
    target: str | None = None  # "sandbox" or a staging target name


def new_backup_id(kind: Kind, now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{kind}"


TIME_HELP = "an ISO 8601 time such as 2026-11-20T04:00:00Z or 2026-11-20 04:00+01:00 (no zone means UTC)"
BACKUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


def _parse_ts(value: str | datetime) -> datetime:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_point_in_time(value: str | datetime, what: str = "--at") -> datetime:
    """An operator's point in time, in UTC; a ConfigError naming the input when it is not one."""
    try:
        return _parse_ts(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not a time", hint=f"give {TIME_HELP}") from None


def check_host_name(host: str) -> str:
    if not HOST_NAME.match(host):
        raise ConfigError(
            f"host name {host!r} is not valid: it must match {HOST_NAME.pattern}",
            hint="pass a host name as listed under hosts: in the config",
        )
    return host


def check_backup_id(backup_id: str) -> str:
    if not BACKUP_ID.match(backup_id):
        raise ConfigError(
            f"backup id {backup_id!r} is not valid: ids look like 20261120T040000123Z-full",
            backup_id=backup_id,
            hint="copy the id from `backup-pipelines list --host HOST`",
        )
    return backup_id


class Catalog:
    """Reads and writes manifests; resolves points in time and chains."""

    def __init__(self, repo: Repository, keyring: Keyring, *, lease_seconds: float = DEFAULT_TTL) -> None:
        self.repo = repo
        self.keyring = keyring
        self.lease_seconds = lease_seconds

    # -- keys -------------------------------------------------------------------------
    @staticmethod
    def host_prefix(host: str) -> str:
        return f"hosts/{check_host_name(host)}/"

    def backup_prefix(self, host: str, backup_id: str) -> str:
        return f"{self.host_prefix(host)}backups/{check_backup_id(backup_id)}/"

    def manifest_key(self, host: str, backup_id: str) -> str:
        return self.backup_prefix(host, backup_id) + MANIFEST

    def object_key(self, host: str, backup_id: str, name: str) -> str:
        return self.backup_prefix(host, backup_id) + name

    # -- sealing small JSON objects ----------------------------------------------------
    def seal_json(self, doc: dict[str, Any]) -> bytes:
        raw = json.dumps(doc, indent=2, sort_keys=True).encode()
        if self.keyring.current is not None:
            return encrypt_bytes(self.keyring.current, raw)
        return raw

    def open_json(self, data: bytes, what: str) -> dict[str, Any]:
        if peek_key_id(data) is not None:
            if not self.keyring.has_keys:
                raise WrongKeyError(
                    f"{what} is encrypted but no encryption key is configured",
                    hint="set repository.encryption_key_file to the repository's key",
                )
            data = decrypt_bytes(self.keyring, data, what=what)
        try:
            doc = json.loads(data)
        except ValueError:
            raise IntegrityError(f"{what} is not valid JSON: it is corrupt") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"{what} is not a JSON object: it is corrupt")
        return doc

    # -- manifests ----------------------------------------------------------------------
    def write_manifest(self, m: BackupManifest) -> None:
        self.repo.put_bytes(self.manifest_key(m.host, m.id), self.seal_json(m.model_dump(mode="json")))

    def commit_manifest(self, m: BackupManifest) -> None:
        """Write a new backup's manifest, but only once every object it names is confirmed stored.

        A manifest naming a missing object would list a backup that cannot be restored; the
        stat (HEAD on S3) catches an object removed or never committed since it was written.
        """
        if m.parent_id is not None:  # a prune elsewhere must not have taken the parent meanwhile
            try:
                gone = self.read_manifest(m.host, m.parent_id).status != "completed"
            except NotFoundError:
                gone = True
            if gone:
                raise ChainError(
                    f"backup {m.id} of {m.host} was not committed: its parent {m.parent_id} was deleted meanwhile",
                    host=m.host,
                    backup_id=m.id,
                    hint=f"take a full backup: backup-pipelines backup full --host {m.host}",
                )
        for obj in m.objects:
            info = self.repo.stat(obj.key)
            if info is None or info.size != obj.size:
                found = "is missing" if info is None else f"is {info.size} bytes, {obj.size} were written"
                raise StorageError(
                    f"backup {m.id} of {m.host} was not committed: its object {found}",
                    host=m.host,
                    backup_id=m.id,
                    key=self.repo.describe(obj.key),
                    hint="something removed it while the run was writing (a cleanup or prune on another "
                    "worker, or a bucket lifecycle rule); run the backup again",
                )
        self.write_manifest(m)

    def read_manifest(self, host: str, backup_id: str) -> BackupManifest:
        key = self.manifest_key(host, backup_id)
        try:
            data = self.repo.get_bytes(key)
        except NotFoundError:
            raise NotFoundError(
                f"backup {backup_id} of host {host} is not in the catalog",
                host=host,
                backup_id=backup_id,
                key=self.repo.describe(key),
                hint=f"run `backup-pipelines list --host {host}` to see the completed backups",
            ) from None
        try:
            return BackupManifest.model_validate(self.open_json(data, f"manifest {key}"))
        except (IntegrityError, WrongKeyError) as err:
            err.host, err.backup_id, err.key = host, backup_id, self.repo.describe(key)
            raise

    def backup_ids(self, host: str) -> list[str]:
        return self.repo.list_dirs(f"{self.host_prefix(host)}backups/")

    def hosts(self) -> list[str]:
        return self.repo.list_dirs("hosts/")

    def _manifest_ids(self, host: str) -> list[str]:
        prefix = f"{self.host_prefix(host)}backups/"
        ids = []
        for info in self.repo.list(prefix):
            rest = info.key[len(prefix) :]
            if rest.endswith("/" + MANIFEST) and rest.count("/") == 1:
                ids.append(rest.split("/", 1)[0])
        return sorted(ids)

    def list_backups(
        self,
        host: str,
        *,
        kinds: Iterable[Kind] | None = None,
        include_deleting: bool = False,
    ) -> list[BackupManifest]:
        """Completed backups of `host`, oldest first."""
        ids = self._manifest_ids(host)
        with ThreadPoolExecutor(max_workers=8) as pool:
            manifests = list(pool.map(lambda i: self.read_manifest(host, i), ids))
        wanted = set(kinds) if kinds else None
        out = [
            m
            for m in manifests
            if (wanted is None or m.kind in wanted) and (include_deleting or m.status == "completed")
        ]
        return sorted(out, key=lambda m: (m.finished_at, m.id))

    def size_hints(self, host: str, kind: Kind) -> dict[str, int]:
        """Stored size of each object of the newest completed `kind` backup of `host`, by name.

        The uploader sizes its parts from them so a stream of about that size never grows its
        parts, which keeps upload memory flat (`repository.s3.upload.PartSizer`).
        """
        newest = self.latest(host, kinds=[kind])
        return {o.name: o.size for o in newest.objects} if newest else {}

    def latest(self, host: str, kinds: Iterable[Kind] = PHYSICAL) -> BackupManifest | None:
        backups = self.list_backups(host, kinds=kinds)
        return backups[-1] if backups else None

    def resolve(
        self,
        host: str,
        *,
        backup_id: str | None = None,
        at: datetime | str | None = None,
        kinds: Iterable[Kind] = PHYSICAL,
    ) -> BackupManifest:
        """The backup to restore: by id, else the newest finished at or before `at`, else the newest."""
        if backup_id:
            m = self.read_manifest(host, backup_id)
            if m.status != "completed":
                raise NotFoundError(
                    f"backup {backup_id} of host {host} is being deleted", host=host, backup_id=backup_id
                )
            return m
        backups = self.list_backups(host, kinds=kinds)
        if at is not None:
            when = parse_point_in_time(at)
            backups = [m for m in backups if m.finished_at <= when]
            if not backups:
                raise NotFoundError(
                    f"host {host} has no completed backup finished at or before {when.isoformat()}",
                    host=host,
                    hint=f"run `backup-pipelines list --host {host}` to see what exists",
                )
        if not backups:
            raise NotFoundError(
                f"host {host} has no completed backup",
                host=host,
                hint=f"take one with `backup-pipelines backup full --host {host}`",
            )
        return backups[-1]

    def chain(self, host: str, backup_id: str) -> list[BackupManifest]:
        """[full, incremental, ..., backup_id]; every link present and LSN-contiguous."""
        links: list[BackupManifest] = []
        current: str | None = backup_id
        seen: set[str] = set()
        while current is not None:
            if current in seen:
                raise ChainError(f"backup chain of {backup_id} loops at {current}", host=host, backup_id=backup_id)
            seen.add(current)
            try:
                m = self.read_manifest(host, current)
            except NotFoundError:
                raise ChainError(
                    f"backup {backup_id} of host {host} cannot be restored: its chain is missing backup {current}",
                    host=host,
                    backup_id=current,
                    hint="restore an earlier point (`list` shows them) or the offsite copy; take a new "
                    "full backup so new incrementals do not build on the broken chain",
                ) from None
            links.append(m)
            current = m.parent_id
        links.reverse()
        if links[0].kind != "full":
            raise ChainError(
                f"backup chain of {backup_id} starts with {links[0].id}, which is not a full backup",
                host=host,
                backup_id=backup_id,
            )
        for parent, child in pairwise(links):
            if child.from_lsn != parent.to_lsn:
                raise ChainError(
                    f"LSN gap in the chain of {backup_id}: {child.id} starts at LSN {child.from_lsn} "
                    f"but its parent {parent.id} ends at {parent.to_lsn}",
                    host=host,
                    backup_id=child.id,
                    hint="take a new full backup; restore only points before the gap",
                )
        return links

    def check_objects(self, m: BackupManifest) -> list[str]:
        """Problems with a backup's stored objects (missing, wrong size) without reading them."""
        problems = []
        for obj in m.objects:
            info = self.repo.stat(obj.key)
            if info is None:
                problems.append(f"{m.id}: object {obj.key} is missing")
            elif info.size != obj.size:
                problems.append(f"{m.id}: object {obj.key} is {info.size} bytes, manifest says {obj.size}")
            if not obj.sha256:
                problems.append(f"{m.id}: object {obj.key} has no checksum")
        if m.encryption and m.encryption.scheme != SCHEME:
            problems.append(f"{m.id}: unknown encryption scheme {m.encryption.scheme}")
        return problems

    # -- deletion (two-phase, so a crash never leaves a half-listed backup) ----------
    def delete_backup(self, m: BackupManifest) -> None:
        marked = m.model_copy(update={"status": "deleting"})
        self.write_manifest(marked)
        self.repo.delete([o.key for o in m.objects])
        leftovers = [i.key for i in self.repo.list(self.backup_prefix(m.host, m.id)) if not i.key.endswith(MANIFEST)]
        self.repo.delete(leftovers)
        self.repo.delete([self.manifest_key(m.host, m.id)])

    # -- orphans of interrupted runs -----------------------------------------------------
    def _unmanifested(self, host: str, older_than: datetime) -> list[str]:
        """Backup directories with objects but no manifest, last written before `older_than`."""
        prefix = f"{self.host_prefix(host)}backups/"
        newest: dict[str, datetime] = {}
        has_manifest: set[str] = set()
        for info in self.repo.list(prefix):
            bid = info.key[len(prefix) :].split("/", 1)[0]
            if info.key.endswith("/" + MANIFEST):
                has_manifest.add(bid)
            mod = info.modified or datetime.now(UTC)
            newest[bid] = max(newest.get(bid, mod), mod)
        return sorted(b for b, t in newest.items() if b not in has_manifest and t < older_than)

    def _unleased(self, host: str, candidates: list[str], leased: set[str]) -> list[str]:
        # A directory whose manifest appeared since the listing was committed (and its lease let go).
        return [b for b in candidates if b not in leased and not self.repo.exists(self.manifest_key(host, b))]

    def orphans(self, host: str, older_than: datetime) -> list[str]:
        """Backup directories with objects but no manifest, last written before `older_than`, unleased.

        The order matters: objects are listed first and leases read after, so any object seen
        was written after its run's lease (a run leases first); a directory is dropped if its
        manifest appeared meanwhile (the run committed and let its lease go since the listing).
        """
        candidates = self._unmanifested(host, older_than)
        return self._unleased(host, candidates, self.leased_ids(host)) if candidates else []

    def cleanup_orphans(self, host: str, grace: timedelta) -> list[str]:
        """Remove what interrupted runs left; never anything a live lease names, whatever the grace.

        One reading of the leases, taken after both the objects and the incomplete writes are
        listed, decides for both, so a run's leftovers go in one cleanup once its lease lapsed.
        """
        cutoff = datetime.now(UTC) - grace
        removed: list[str] = []
        candidates = self._unmanifested(host, cutoff)
        backups = f"{self.host_prefix(host)}backups/"
        reading: list[tuple[set[str], list[str]]] = []  # taken once, when first needed

        def leases() -> set[str]:
            if not reading:
                reading.append(self.read_leases(host))
            return reading[0][0]

        def in_flight(key: str) -> bool:
            # Called by the driver after it has listed every incomplete write.
            return key.startswith(backups) and key[len(backups) :].split("/", 1)[0] in leases()

        incomplete = self.repo.cleanup_incomplete(self.host_prefix(host), cutoff, keep=in_flight)
        live = leases()
        for bid in self._unleased(host, candidates, live):
            keys = [i.key for i in self.repo.list(self.backup_prefix(host, bid))]
            self.repo.delete(keys)
            removed.extend(keys)
        removed.extend(incomplete)
        # A deleting-marked manifest whose data is gone is the tail of an interrupted prune.
        for m in self.list_backups(host, include_deleting=True):
            if m.status == "deleting":
                self.delete_backup(m)
                removed.append(self.manifest_key(host, m.id))
        lapsed = reading[0][1]
        self.repo.delete(lapsed)  # the leases of dead runs, lapsed in that same reading
        removed.extend(lapsed)
        return removed

    # -- verification reports ---------------------------------------------------------
    def write_verification(self, report: VerificationReport) -> str:
        stamp = f"{report.finished_at:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"
        key = f"{self.host_prefix(report.host)}verifications/{report.backup_id}/{stamp}.json"
        self.repo.put_bytes(key, self.seal_json(report.model_dump(mode="json")))
        return key

    def verifications(self, host: str, backup_id: str | None = None) -> list[VerificationReport]:
        prefix = f"{self.host_prefix(host)}verifications/"
        if backup_id:
            prefix += f"{backup_id}/"
        keys = [i.key for i in self.repo.list(prefix) if i.key.endswith(".json")]
        reports = [VerificationReport.model_validate(self.open_json(self.repo.get_bytes(k), k)) for k in keys]
        return sorted(reports, key=lambda r: r.finished_at)

    # -- leases: runs in progress (see leases.py) -------------------------------------
    @contextmanager
    def lease(self, host: str, backup_ids: list[str], *, purpose: str, ttl: float | None = None) -> Iterator[Lease]:
        """Hold a renewed lease on backups being written or read, for as long as the block runs."""
        held = Lease(self, host, backup_ids, purpose=purpose, ttl=ttl or self.lease_seconds).start()
        try:
            yield held
        finally:
            held.stop()

    def read_leases(self, host: str, now: datetime | None = None) -> tuple[set[str], list[str]]:
        """One reading of the host's leases: the backup ids live leases name, and the lapsed lease keys."""
        now = now or datetime.now(UTC)
        ids: set[str] = set()
        lapsed: list[str] = []
        for info in self.repo.list(f"{self.host_prefix(host)}leases/"):
            try:
                doc = self.open_json(self.repo.get_bytes(info.key), info.key)
            except NotFoundError:
                continue
            except IntegrityError:
                lapsed.append(info.key)  # unreadable: it protects nothing
                continue
            if is_live(doc, info.modified, now):
                ids.update(doc["backup_ids"])
            else:
                lapsed.append(info.key)
        return ids, lapsed

    def leased_ids(self, host: str, now: datetime | None = None) -> set[str]:
        return self.read_leases(host, now)[0]
