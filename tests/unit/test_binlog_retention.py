"""Binlog retention and continuity as pure functions: property tests over random estates.

The retention property extends the backups' one: after any retention plan, every retained
backup replays exactly as far as before (same files, same byte ranges, same latest second).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipelines.core.binlog.continuity import walk
from backup_pipelines.core.binlog.index import FileInstance, SegmentRecord
from backup_pipelines.core.binlog.retention import plan_binlogs
from backup_pipelines.core.catalog import BackupManifest, BinlogInfo, StoredObject
from backup_pipelines.core.config import RetentionPolicy
from backup_pipelines.core.retention import plan_physical

pytestmark = pytest.mark.unit
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
SIZE = 10_000


def _seg(file: str, created: int, start: int, end: int, t: int, closed: bool, nxt: str | None) -> SegmentRecord:
    return SegmentRecord(
        host="db1",
        server_id=1,
        created=created,
        file=file,
        start=start,
        end=end,
        key=f"k/{file}/{start}",
        size=end - start,
        sha256="0" * 64,
        compression="none",
        first_time=t,
        last_time=t,
        covers_until=t,
        closed=closed,
        next_file=nxt,
        archived_at=datetime.fromtimestamp(t, UTC),
    )


def _name(n: int) -> str:
    return f"binlog.{n:06d}"


@st.composite
def estates(draw):
    """Files opened one after another (each an hour), some bytes purged before archiving, and backups."""
    n_files = draw(st.integers(1, 12))
    purged = draw(st.sets(st.integers(0, n_files - 1), max_size=2))
    instances = []
    for n in range(n_files):
        if n in purged:
            continue
        created = T0 + n * 3600
        last = n == n_files - 1
        segs = [_seg(_name(n), created, 4, SIZE // 2, created + 1000, False, None)]
        if not last or draw(st.booleans()):
            segs.append(
                _seg(_name(n), created, SIZE // 2, SIZE, created + 3000, not last, None if last else _name(n + 1))
            )
        instances.append(FileInstance(1, created, _name(n), segs))
    backups = []
    for i in range(draw(st.integers(1, 10))):
        n = draw(st.integers(0, n_files - 1))
        pos = draw(st.sampled_from([4, SIZE // 2]))
        when = datetime.fromtimestamp(T0 + n * 3600 + (1500 if pos > 4 else 10), UTC)
        backups.append(
            BackupManifest(
                id=f"b{i:02d}",
                host="db1",
                kind="full",
                chain_id=f"b{i:02d}",
                engine="mariabackup",
                started_at=when - timedelta(seconds=5),
                finished_at=when,
                duration_seconds=5,
                size_bytes=1,
                source_size_bytes=1,
                compression="none",
                objects=[StoredObject(name="data", key=f"k/b{i}", size=1, sha256="0" * 64)],
                binlog=BinlogInfo(file=_name(n), position=pos),
            )
        )
    return instances, backups


def _shape(w):
    return [(p.instance.name, p.start, p.end) for p in w.parts], w.latest, w.gap


@settings(max_examples=300, deadline=None)
@given(estate=estates(), keep_chains=st.integers(1, 4))
def test_retained_backups_replay_as_far_as_before(estate, keep_chains):
    instances, backups = estate
    now = datetime.fromtimestamp(T0 + 100 * 3600, UTC)
    plan = plan_physical(
        backups, RetentionPolicy(keep_full_chains=keep_chains), verified_ids=set(), leased_ids=set(), now=now
    )
    kept = [b for b in backups if b.id in plan.keep]
    bp = plan_binlogs(kept, instances)
    assert {i.name for i in bp.keep} | {i.name for i in bp.delete} == {i.name for i in instances}
    for b in kept:
        assert _shape(walk(bp.keep, b)) == _shape(walk(instances, b)), b.id
    if bp.delete:  # and something older than every kept backup really goes
        oldest = min(kept, key=lambda b: b.finished_at)
        assert all(i.created <= oldest.finished_at.timestamp() for i in bp.delete)


def test_walk_names_a_purged_file_and_stops_before_it():
    a = FileInstance(1, T0, _name(1), [_seg(_name(1), T0, 4, SIZE, T0 + 50, True, _name(2))])
    c = FileInstance(1, T0 + 200, _name(3), [_seg(_name(3), T0 + 200, 4, SIZE, T0 + 250, False, None)])
    b = BackupManifest(
        id="b",
        host="db1",
        kind="full",
        engine="mariabackup",
        started_at=datetime.fromtimestamp(T0 + 1, UTC),
        finished_at=datetime.fromtimestamp(T0 + 2, UTC),
        duration_seconds=1,
        size_bytes=1,
        source_size_bytes=1,
        compression="none",
        objects=[],
        binlog=BinlogInfo(file=_name(1), position=4),
    )
    w = walk([a, c], b)
    assert w.latest == T0 + 50 and w.gap is not None
    assert _name(2) in w.gap and "purged" in w.gap and _name(3) in w.gap
