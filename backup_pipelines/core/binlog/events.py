"""Reading MariaDB binary-log bytes: event headers, file identity and transaction boundaries.

Only what archiving and replay need: where each complete event ends (segments are cut on
event boundaries), the file's server id and creation time (its identity), and per
transaction its GTID, end offset and commit time (the timestamp of the event that ends it),
so a replay can stop on a transaction boundary at any second without `--stop-datetime`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"\xfebin"
HEADER = 19
QUERY, STOP, ROTATE, FORMAT_DESCRIPTION, XID = 2, 3, 4, 15, 16
GTID, GTID_LIST = 162, 163
FL_STANDALONE = 1
_HDR = struct.Struct("<IBIIIH")


@dataclass(frozen=True)
class Event:
    offset: int
    end: int
    timestamp: int
    type: int
    server_id: int


@dataclass(frozen=True)
class FileIdentity:
    server_id: int
    created: int  # the format-description event's timestamp: when the file was opened
    checksum: bool


@dataclass(frozen=True)
class Transaction:
    gtid: str
    start: int  # offset of its GTID event
    end: int  # offset just past the event that ends it
    commit_time: int  # unix seconds of that event


def events(data: bytes | memoryview, start: int = 4) -> Iterator[Event]:
    """Complete events from `start` (an event boundary); a trailing partial event is not yielded."""
    view = memoryview(data)
    pos = start
    while pos + HEADER <= len(view):
        ts, typ, sid, length, _next, _flags = _HDR.unpack_from(view, pos)
        if length < HEADER or pos + length > len(view):
            return
        yield Event(pos, pos + length, ts, typ, sid)
        pos += length


def identity(data: bytes | memoryview) -> FileIdentity:
    """The identity of a binlog file from its first event (the format description)."""
    if bytes(data[:4]) != MAGIC:
        raise ValueError("not a binary log (bad magic)")
    first = next(events(data), None)
    if first is None or first.type != FORMAT_DESCRIPTION:
        raise ValueError("binary log does not start with a format description event")
    alg = data[first.end - 5]
    return FileIdentity(first.server_id, first.timestamp, alg == 1)


def complete_end(data: bytes | memoryview, start: int = 4) -> int:
    """Offset just past the last complete event."""
    end = start
    for ev in events(data, start):
        end = ev.end
    return end


def _query_text(data: memoryview, ev: Event, checksum: bool) -> bytes:
    p = ev.offset + HEADER
    db_len = data[p + 8]
    status_len = struct.unpack_from("<H", data, p + 11)[0]
    q = p + 13 + status_len + db_len + 1
    return bytes(data[q : ev.end - (4 if checksum else 0)]).strip()


def transactions(data: bytes | memoryview, start: int = 4, *, checksum: bool = True) -> Iterator[Transaction]:
    """Complete GTID groups starting at or after `start`, in order."""
    view = memoryview(data)
    current: tuple[str, int, bool] | None = None
    for ev in events(view, start):
        if ev.type == GTID:
            seq, domain, flags = struct.unpack_from("<QIB", view, ev.offset + HEADER)
            current = (f"{domain}-{ev.server_id}-{seq}", ev.offset, bool(flags & FL_STANDALONE))
            continue
        if current is None:
            continue
        gtid, begin, standalone = current
        ends = ev.type == XID
        if ev.type == QUERY:
            text = _query_text(view, ev, checksum).upper()
            ends = standalone or text.startswith((b"COMMIT", b"ROLLBACK", b"XA COMMIT", b"XA ROLLBACK"))
        if ends:
            yield Transaction(gtid, begin, ev.end, ev.timestamp)
            current = None


def rotate_target(data: bytes | memoryview, checksum: bool = True) -> str | None:
    """The next file's name where the file ends with a rotate event (it was closed)."""
    last = None
    for ev in events(data):
        last = ev
    if last is None or last.type != ROTATE:
        return None
    return bytes(memoryview(data)[last.offset + HEADER + 8 : last.end - (4 if checksum else 0)]).decode()
