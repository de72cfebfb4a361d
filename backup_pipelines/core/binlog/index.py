"""The binlog segment catalog: one sealed record per archived byte range of a binlog file.

Layout under the repository root, beside the backups:

    hosts/<host>/binlogs/<instance>/<start>-<end>.binlog[.zst][.enc]   the bytes [start, end)
    hosts/<host>/binlogs/<instance>/<start>-<end>.json                 its record: the commit point
    hosts/<host>/binlogs/heartbeat-<server_id>.hb                      the archiver's latest "covered until"

`<instance>` is `<server_id>-<created>-<file>`: the server that wrote the file, the time the
file was opened and its name, so a switchover or a `RESET MASTER` that repeats a name never
overwrites an archived object (objects are also never written twice: an existing key is an
error). A record holds the byte range, first/last commit time and GTID of the transactions
that end inside it, and `covers_until`: every transaction committed before that second is in
the bytes archived so far, which is what makes a quiet server restorable to "now".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..catalog import Catalog
from ..codec import CallableSink, Codec, Digest, Stage, decode_stages, encode_chain
from ..crypto import Keyring
from ..errors import IntegrityError, NotFoundError, StorageError
from .events import FileIdentity, transactions

_NUM = re.compile(r"\.(\d+)$")


class SegmentRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: int = 1
    host: str
    server_id: int
    created: int
    file: str
    start: int
    end: int
    key: str
    size: int
    sha256: str
    compression: str
    encryption: str | None = None
    first_time: int | None = None  # commit time (unix s) of the first transaction ending in the range
    last_time: int | None = None
    first_gtid: str | None = None
    last_gtid: str | None = None
    covers_until: int  # unix s: everything committed before this second is archived (up to `end`)
    closed: bool = False  # the range ends the file (rotate or stop event)
    next_file: str | None = None
    archived_at: datetime

    @property
    def instance(self) -> str:
        return instance_name(self.server_id, self.created, self.file)

    @property
    def codec(self) -> Codec:
        return Codec(self.compression, self.encryption)


def instance_name(server_id: int, created: int, file: str) -> str:
    return f"{server_id}-{created}-{file}"


def file_number(name: str) -> int:
    m = _NUM.search(name)
    return int(m.group(1)) if m else -1


@dataclass
class FileInstance:
    """All archived segments of one binlog file, in byte order."""

    server_id: int
    created: int
    file: str
    segments: list[SegmentRecord] = field(default_factory=list)
    vouched: int = 0  # the archiver's heartbeat: everything committed before this second is archived

    @property
    def name(self) -> str:
        return instance_name(self.server_id, self.created, self.file)

    @property
    def contiguous_end(self) -> int:
        """End of the byte range archived without a hole from the file's start (4 when none)."""
        end = 4
        for s in self.segments:
            if s.start > end:
                break
            end = max(end, s.end)
        return end

    @property
    def holes(self) -> list[tuple[int, int]]:
        out, end = [], 4
        for s in self.segments:
            if s.start > end:
                out.append((end, s.start))
            end = max(end, s.end)
        return out

    @property
    def closed(self) -> bool:
        return any(s.closed and s.end == self.contiguous_end for s in self.segments)

    @property
    def next_file(self) -> str | None:
        return next((s.next_file for s in self.segments if s.closed), None)

    def covered(self) -> list[SegmentRecord]:
        end, out = 4, []
        for s in self.segments:
            if s.start > end:
                break
            out.append(s)
            end = max(end, s.end)
        return out

    @property
    def last_time(self) -> int | None:
        times = [s.last_time for s in self.covered() if s.last_time is not None]
        return max(times) if times else None

    @property
    def covers_until(self) -> int:
        return max([s.covers_until for s in self.covered()] + [self.vouched, self.created])


def order_key(inst: FileInstance) -> tuple[int, int, str]:
    return (inst.created, file_number(inst.file), inst.file)


def has_binlogs(catalog: Catalog, host: str) -> bool:
    """Whether any binlog segment of `host` was ever archived (point-in-time restores then replay)."""
    return any(i.key.endswith(".json") for i in catalog.repo.list(f"{catalog.host_prefix(host)}binlogs/"))


class BinlogIndex:
    """Reads and writes binlog segments and their records for one repository."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.repo = catalog.repo
        self.keyring: Keyring = catalog.keyring

    def prefix(self, host: str) -> str:
        return f"{self.catalog.host_prefix(host)}binlogs/"

    def records(self, host: str) -> list[SegmentRecord]:
        keys = [i.key for i in self.repo.list(self.prefix(host)) if i.key.endswith(".json")]
        with ThreadPoolExecutor(max_workers=8) as pool:
            docs = list(pool.map(lambda k: self.catalog.open_json(self.repo.get_bytes(k), f"binlog record {k}"), keys))
        return [SegmentRecord.model_validate(d) for d in docs]

    def instances(self, host: str, records: Iterable[SegmentRecord] | None = None) -> list[FileInstance]:
        by: dict[str, FileInstance] = {}
        for r in self.records(host) if records is None else records:
            inst = by.setdefault(r.instance, FileInstance(r.server_id, r.created, r.file))
            inst.segments.append(r)
        for inst in by.values():
            inst.segments.sort(key=lambda s: (s.start, s.end))
        for hb in self.heartbeats(host):
            inst = by.get(instance_name(hb["server_id"], hb["created"], hb["file"]))
            if inst is not None and hb["end"] <= inst.contiguous_end:
                inst.vouched = max(inst.vouched, int(hb["covers_until"]))
        return sorted(by.values(), key=order_key)

    # -- the archiver's heartbeat: a quiet server stays restorable up to "now" ------------
    def heartbeat_key(self, host: str, server_id: int) -> str:
        return f"{self.prefix(host)}heartbeat-{server_id}.hb"

    def write_heartbeat(self, host: str, ident: FileIdentity, file: str, end: int, covers_until: int) -> None:
        """Everything committed before `covers_until` is in bytes < `end` of this file (overwritten each time)."""
        doc = {
            "server_id": ident.server_id,
            "created": ident.created,
            "file": file,
            "end": end,
            "covers_until": covers_until,
            "at": datetime.now(UTC).isoformat(),
        }
        self.repo.put_bytes(self.heartbeat_key(host, ident.server_id), self.catalog.seal_json(doc))

    def heartbeats(self, host: str) -> list[dict[str, Any]]:
        out = []
        for info in self.repo.list(self.prefix(host)):
            if info.key.endswith(".hb"):
                try:
                    out.append(self.catalog.open_json(self.repo.get_bytes(info.key), f"heartbeat {info.key}"))
                except (NotFoundError, IntegrityError):
                    continue
        return out

    def write_segment(
        self,
        host: str,
        ident: FileIdentity,
        file: str,
        data: bytes | memoryview,
        start: int,
        end: int,
        *,
        codec: Codec,
        covers_until: int,
        closed: bool,
        next_file: str | None,
    ) -> SegmentRecord:
        """Store bytes [start, end) of `file` (`data` is the file from offset 0) and commit its record."""
        base = f"{self.prefix(host)}{instance_name(ident.server_id, ident.created, file)}/{start:012d}-{end:012d}"
        key = base + ".binlog" + codec.suffix
        record_key = base + ".json"
        if self.repo.exists(record_key):  # a data object without its record is a crashed run's: rewritten
            raise StorageError(
                f"binlog segment {file} [{start}, {end}) of host {host} is already archived; refusing to overwrite it",
                host=host,
                key=self.repo.describe(key),
                hint="another archiver may be running for this host: run only one `binlog stream` per host",
            )
        txns = [t for t in transactions(data, start, checksum=ident.checksum) if t.end <= end]
        writer = self.repo.open_writer(key, size_hint=end - start)
        try:
            head, digest = encode_chain(codec, self.keyring, CallableSink(writer.write))
            view = memoryview(data)[start:end]
            for i in range(0, len(view), 1 << 20):
                head.write(view[i : i + (1 << 20)])
            head.finish()
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        rec = SegmentRecord(
            host=host,
            server_id=ident.server_id,
            created=ident.created,
            file=file,
            start=start,
            end=end,
            key=key,
            size=digest.size,
            sha256=digest.sha256,
            compression=codec.compression,
            encryption=codec.encryption,
            first_time=txns[0].commit_time if txns else None,
            last_time=txns[-1].commit_time if txns else None,
            first_gtid=txns[0].gtid if txns else None,
            last_gtid=txns[-1].gtid if txns else None,
            covers_until=covers_until,
            closed=closed,
            next_file=next_file,
            archived_at=datetime.now(UTC),
        )
        self.repo.put_bytes(record_key, self.catalog.seal_json(rec.model_dump(mode="json")))
        return rec

    def fetch(self, rec: SegmentRecord, sink: Stage) -> None:
        """The segment's raw bytes into `sink`, checked against its record."""
        where = self.repo.describe(rec.key)
        digest = Digest(decode_stages(rec.codec, self.keyring, sink, what=f"binlog segment {where}"))
        self.repo.read_into(rec.key, digest.write)
        if digest.size != rec.size or digest.sha256 != rec.sha256:
            raise IntegrityError(
                f"binlog segment {rec.file} [{rec.start}, {rec.end}) is corrupt: sha256 {digest.sha256[:16]}... and "
                f"{digest.size} bytes stored, the record says {rec.sha256[:16]}... and {rec.size}",
                host=rec.host,
                key=where,
                hint="restore to a time before this segment, or from the offsite copy",
            )
        digest.finish()

    def delete(self, recs: Iterable[SegmentRecord]) -> None:
        for r in recs:
            record_key = r.key[: r.key.rindex(".binlog")] + ".json"
            self.repo.delete([record_key])  # the record first: a half-deleted segment is never listed
            self.repo.delete([r.key])
