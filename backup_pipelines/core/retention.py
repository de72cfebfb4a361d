"""Retention: which backups prune may delete, without ever breaking what a restore needs.

Physical backups are kept by *points*: each rule picks points (backups) to keep, and a
kept point keeps its whole ancestry (base and every incremental up to it). A backup is
deleted only if no kept point needs it. Rules, each a small class:

    KeepNewestChains(n)     every point of the n newest chains
    KeepPeriodic(daily|weekly|monthly, n)   the newest point of each of the last n periods
    KeepYoungerThan(days)   every point younger than that
    and always: the newest point, the newest verified chain, and anything leased by a
    running restore.

Logical dumps rotate the automysqlbackup way (daily, weekly on a weekday, monthly on a
day of the month), classified by each dump's *date* rather than when it ran, so a late or
backfilled run does not break the pattern.

Planning is pure (no I/O) so it can be property-tested; applying deletes children before
parents, each through the two-phase catalog delete.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .catalog import PHYSICAL, BackupManifest, Catalog
from .config import DumpRotation, RetentionPolicy


class Rule(ABC):
    @abstractmethod
    def keep(self, points: list[BackupManifest], now: datetime) -> dict[str, str]:
        """Ids of points to keep, each with the reason."""


@dataclass(frozen=True)
class KeepNewestChains(Rule):
    n: int

    def keep(self, points: list[BackupManifest], now: datetime) -> dict[str, str]:
        roots: list[str] = []
        for m in sorted(points, key=lambda m: (m.finished_at, m.id), reverse=True):
            root = m.chain_id or m.id
            if root not in roots:
                roots.append(root)
        wanted = set(roots[: self.n])
        return {m.id: f"in one of the {self.n} newest chains" for m in points if (m.chain_id or m.id) in wanted}


def period_of(when: datetime, period: str) -> tuple[int, ...]:
    d = when.date()
    if period == "daily":
        return (d.year, d.month, d.day)
    if period == "weekly":
        iso = d.isocalendar()
        return (iso.year, iso.week)
    return (d.year, d.month)


@dataclass(frozen=True)
class KeepPeriodic(Rule):
    period: str  # daily | weekly | monthly
    n: int

    def keep(self, points: list[BackupManifest], now: datetime) -> dict[str, str]:
        newest_in: dict[tuple[int, ...], BackupManifest] = {}
        for m in points:
            key = period_of(m.finished_at, self.period)
            if key not in newest_in or (m.finished_at, m.id) > (
                newest_in[key].finished_at,
                newest_in[key].id,
            ):
                newest_in[key] = m
        chosen = sorted(newest_in, reverse=True)[: self.n]
        return {newest_in[k].id: f"newest of {self.period} period {'-'.join(map(str, k))}" for k in chosen}


@dataclass(frozen=True)
class KeepYoungerThan(Rule):
    days: float

    def keep(self, points: list[BackupManifest], now: datetime) -> dict[str, str]:
        cutoff = now - timedelta(days=self.days)
        return {m.id: f"younger than {self.days:g} days" for m in points if m.finished_at > cutoff}


def rules_for(policy: RetentionPolicy) -> list[Rule]:
    rules: list[Rule] = []
    if policy.keep_full_chains is not None:
        rules.append(KeepNewestChains(policy.keep_full_chains))
    for period, n in (
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
    ):
        if n is not None:
            rules.append(KeepPeriodic(period, n))
    if policy.min_age_days is not None:
        rules.append(KeepYoungerThan(policy.min_age_days))
    return rules


@dataclass
class Plan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    delete: list[BackupManifest] = field(default_factory=list)  # in safe order: children first

    def summary(self) -> dict[str, object]:
        return {
            "keep": {k: sorted(set(v)) for k, v in sorted(self.keep.items())},
            "delete": [m.id for m in self.delete],
            "delete_bytes": sum(m.size_bytes for m in self.delete),
        }


def plan_physical(
    backups: Iterable[BackupManifest],
    policy: RetentionPolicy,
    *,
    verified_ids: set[str],
    leased_ids: set[str],
    now: datetime,
) -> Plan:
    points = [m for m in backups if m.kind in PHYSICAL]
    by_id = {m.id: m for m in points}
    plan = Plan()
    rules = rules_for(policy)
    if not points:
        return plan
    reasons: dict[str, list[str]] = {}

    def keep_point(bid: str, why: str) -> None:
        current: str | None = bid
        first = True
        while current is not None and current in by_id:
            reasons.setdefault(current, []).append(why if first else f"ancestor of {bid} ({why})")
            first = False
            current = by_id[current].parent_id

    if not rules:  # no policy: keep everything
        for m in points:
            keep_point(m.id, "no retention policy")
    for rule in rules:
        for bid, why in rule.keep(points, now).items():
            keep_point(bid, why)
    newest = max(points, key=lambda m: (m.finished_at, m.id))
    keep_point(newest.id, "the newest point")
    verified = [m for m in points if m.id in verified_ids]
    if verified:
        newest_verified = max(verified, key=lambda m: (m.finished_at, m.id))
        root = newest_verified.chain_id or newest_verified.id
        for m in points:
            if (m.chain_id or m.id) == root:
                keep_point(m.id, "in the newest verified chain")
    for bid in leased_ids & set(by_id):
        keep_point(bid, "read by a running restore")
    plan.keep = reasons
    doomed = [m for m in points if m.id not in reasons]
    # Children before parents: an interrupted prune never leaves an incremental without its parent.
    plan.delete = sorted(doomed, key=lambda m: (m.finished_at, m.id), reverse=True)
    return plan


def dump_date(m: BackupManifest) -> date:
    label = m.labels.get("for_date")
    return date.fromisoformat(label) if label else m.finished_at.date()


def plan_dumps(dumps: Iterable[BackupManifest], rotation: DumpRotation, *, leased_ids: set[str]) -> Plan:
    """automysqlbackup's rotation: newest per date, then daily / weekly / monthly keep counts."""
    items = sorted((m for m in dumps if m.kind == "dump"), key=lambda m: (dump_date(m), m.finished_at, m.id))
    plan = Plan()
    newest_per_date: dict[date, BackupManifest] = {}
    for m in items:
        newest_per_date[dump_date(m)] = m  # a re-run for the same date supersedes the earlier one
    dates = sorted(newest_per_date, reverse=True)
    reasons: dict[str, list[str]] = {}

    def keep(d: date, why: str) -> None:
        reasons.setdefault(newest_per_date[d].id, []).append(why)

    for d in dates[: rotation.keep_daily]:
        keep(d, f"daily ({d})")
    weekly = [d for d in dates if d.isoweekday() == rotation.weekly_day]
    for d in weekly[: rotation.keep_weekly]:
        keep(d, f"weekly ({d})")
    monthly = [d for d in dates if d.day == rotation.monthly_day]
    for d in monthly[: rotation.keep_monthly]:
        keep(d, f"monthly ({d})")
    if dates:
        keep(dates[0], "the newest dump")
    for m in items:
        if m.id in leased_ids:
            reasons.setdefault(m.id, []).append("read by a running restore")
    plan.keep = reasons
    plan.delete = [m for m in reversed(items) if m.id not in reasons]
    return plan


def verified_backup_ids(catalog: Catalog, host: str) -> set[str]:
    """Backups with at least one passing sandbox or staging verification."""
    return {r.backup_id for r in catalog.verifications(host) if r.passed}


def prune(
    catalog: Catalog,
    host: str,
    policy: RetentionPolicy,
    rotation: DumpRotation,
    *,
    apply: bool,
    now: datetime,
) -> dict[str, object]:
    backups = catalog.list_backups(host)
    leased = catalog.leased_ids(host, now)
    physical = plan_physical(
        backups, policy, verified_ids=verified_backup_ids(catalog, host), leased_ids=leased, now=now
    )
    dumps = plan_dumps(backups, rotation, leased_ids=leased)
    deleted: list[str] = []
    skipped: list[str] = []
    from .binlog.index import BinlogIndex
    from .binlog.retention import plan_binlogs

    binlog_index = BinlogIndex(catalog)
    doomed = {m.id for m in physical.delete}
    binlogs = plan_binlogs(
        [m for m in backups if m.kind in PHYSICAL and m.id not in doomed], binlog_index.instances(host)
    )
    if apply:
        for m in [*physical.delete, *dumps.delete]:
            if m.id in catalog.leased_ids(host):  # a restore started since planning: leave it
                skipped.append(m.id)
                continue
            catalog.delete_backup(m)
            deleted.append(m.id)
        if not skipped:  # binlogs go only once every backup that needed them is gone
            for inst in binlogs.delete:
                binlog_index.delete(inst.segments)
                deleted.append(f"binlog {inst.name}")
    return {
        "host": host,
        "applied": apply,
        "physical": physical.summary(),
        "dumps": dumps.summary(),
        "binlogs": binlogs.summary(),
        "deleted": deleted,
        "skipped_leased": skipped,
    }
