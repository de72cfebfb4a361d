"""Retention planning: properties over random chains and policies, and automysqlbackup rotation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipelines.core.catalog import BackupManifest, StoredObject
from backup_pipelines.core.config import DumpRotation, RetentionPolicy
from backup_pipelines.core.retention import plan_dumps, plan_physical

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _m(bid: str, kind: str, parent: str | None, chain: str | None, when: datetime, **labels: str) -> BackupManifest:
    return BackupManifest(
        id=bid,
        host="db1",
        kind=kind,
        parent_id=parent,
        chain_id=chain,
        engine="mariabackup",
        from_lsn=0,
        to_lsn=0,
        started_at=when - timedelta(minutes=1),
        finished_at=when,
        duration_seconds=60,
        size_bytes=1,
        source_size_bytes=1,
        compression="none",
        objects=[StoredObject(name="data", key=f"k/{bid}", size=1, sha256="0" * 64)],
        labels=labels,
    )


@st.composite
def fleets(draw):
    """Random chains: fulls at random gaps, each followed by a random run of incrementals."""
    backups: list[BackupManifest] = []
    when = T0
    for c in range(draw(st.integers(1, 8))):
        when += timedelta(hours=draw(st.integers(1, 24 * 9)))
        full = _m(f"c{c}-0", "full", None, f"c{c}-0", when)
        backups.append(full)
        parent = full
        for i in range(1, draw(st.integers(0, 12)) + 1):
            when += timedelta(minutes=draw(st.integers(5, 600)))
            inc = _m(f"c{c}-{i}", "incremental", parent.id, full.id, when)
            backups.append(inc)
            parent = inc
    return backups


policies = st.builds(
    RetentionPolicy,
    keep_full_chains=st.none() | st.integers(1, 4),
    keep_daily=st.none() | st.integers(0, 10),
    keep_weekly=st.none() | st.integers(0, 5),
    keep_monthly=st.none() | st.integers(0, 3),
    min_age_days=st.none() | st.floats(0, 30),
)


@settings(max_examples=300, deadline=None)
@given(backups=fleets(), policy=policies, data=st.data())
def test_no_kept_backup_loses_an_ancestor(backups, policy, data):
    ids = [m.id for m in backups]
    verified = set(data.draw(st.lists(st.sampled_from(ids), max_size=4)))
    leased = set(data.draw(st.lists(st.sampled_from(ids), max_size=2)))
    now = backups[-1].finished_at + timedelta(days=data.draw(st.integers(0, 60)))
    plan = plan_physical(backups, policy, verified_ids=verified, leased_ids=leased, now=now)
    by_id = {m.id: m for m in backups}
    deleted = {m.id for m in plan.delete}
    kept = set(plan.keep)
    assert kept | deleted == set(ids) and not kept & deleted
    for bid in kept:  # every kept point's ancestry is kept
        parent = by_id[bid].parent_id
        while parent:
            assert parent in kept, f"{bid} kept but its ancestor {parent} deleted"
            parent = by_id[parent].parent_id
    newest = max(backups, key=lambda m: m.finished_at)
    assert newest.id in kept
    if verified:
        newest_verified = max((by_id[v] for v in verified), key=lambda m: m.finished_at)
        chain = {m.id for m in backups if m.chain_id == newest_verified.chain_id}
        assert chain <= kept, "the newest verified chain must survive whole"
    assert leased <= kept
    # deletion order: no backup is deleted before one of its descendants
    position = {m.id: i for i, m in enumerate(plan.delete)}
    for m in plan.delete:
        if m.parent_id in position:
            assert position[m.id] < position[m.parent_id]


def test_no_policy_keeps_everything():
    backups = [_m("a", "full", None, "a", T0), _m("b", "incremental", "a", "a", T0 + timedelta(hours=1))]
    plan = plan_physical(backups, RetentionPolicy(), verified_ids=set(), leased_ids=set(), now=T0)
    assert plan.delete == []


def test_keep_newest_chains_and_daily_points():
    chains = []
    for d in range(5):  # five days, one chain a day, three incrementals each
        full = _m(f"d{d}", "full", None, f"d{d}", T0 + timedelta(days=d))
        chains.append(full)
        for i in range(1, 4):
            chains.append(_m(f"d{d}-{i}", "incremental", chains[-1].id, full.id, T0 + timedelta(days=d, hours=i)))
    plan = plan_physical(
        chains,
        RetentionPolicy(keep_full_chains=2),
        verified_ids=set(),
        leased_ids=set(),
        now=T0 + timedelta(days=6),
    )
    assert sorted(plan.keep) == sorted(m.id for m in chains if m.chain_id in ("d3", "d4"))
    # daily=3 keeps the newest point of each of the last 3 days, with its ancestry (whole chains here)
    plan = plan_physical(
        chains,
        RetentionPolicy(keep_daily=3),
        verified_ids=set(),
        leased_ids=set(),
        now=T0 + timedelta(days=6),
    )
    assert {m.chain_id for m in chains if m.id in plan.keep} == {"d2", "d3", "d4"}
    # an old verified chain survives a 1-chain policy, whole
    plan = plan_physical(
        chains,
        RetentionPolicy(keep_full_chains=1),
        verified_ids={"d1-2"},
        leased_ids=set(),
        now=T0 + timedelta(days=6),
    )
    assert {"d1", "d1-1", "d1-2", "d1-3"} <= set(plan.keep)
    assert "in the newest verified chain" in plan.keep["d1-3"]


def test_automysqlbackup_rotation_over_a_simulated_month():
    """30 nightly dumps; Saturday weeklies; a monthly on the 1st; one late run and one re-run."""
    rot = DumpRotation(keep_daily=7, keep_weekly=3, keep_monthly=2, weekly_day=6, monthly_day=1)
    dumps = []
    start = date(2026, 10, 15)
    for i in range(30):
        d = start + timedelta(days=i)
        ran = datetime(d.year, d.month, d.day, 2, 30, tzinfo=UTC)
        if d == date(2026, 10, 31):  # a Saturday whose run was late: it ran on Sunday at 00:40
            ran += timedelta(hours=22, minutes=10)
        dumps.append(_m(f"dump-{d}", "dump", None, None, ran, for_date=d.isoformat()))
    rerun_day = date(2026, 11, 10)
    dumps.append(
        _m(
            f"dump-{rerun_day}-rerun",
            "dump",
            None,
            None,
            datetime(2026, 11, 10, 9, 0, tzinfo=UTC),
            for_date=rerun_day.isoformat(),
        )
    )
    plan = plan_dumps(dumps, rot, leased_ids=set())
    kept = set(plan.keep)
    last7 = {f"dump-2026-11-{d:02d}" for d in (7, 8, 9, 11, 12, 13)} | {"dump-2026-11-10-rerun"}
    saturdays = {"dump-2026-11-07", "dump-2026-10-31", "dump-2026-10-24"}  # the late 10-31 run still counts
    monthly = {"dump-2026-11-01"}  # 2026-10-01 is before the simulated month
    assert kept == last7 | saturdays | monthly
    assert "weekly (2026-10-31)" in plan.keep["dump-2026-10-31"]
    assert "dump-2026-11-10" not in kept  # superseded by its re-run
    assert all(m.id not in kept for m in plan.delete)
    assert len(plan.delete) == len(dumps) - len(kept)
