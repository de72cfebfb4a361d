"""The binlog freshness judgement: within the RPO and gap-free passes; older, never, or any gap fails."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backup_pipelines.defs.binlog import judge

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 2, 5, 10, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("latest", "gaps", "passed"),
    [
        ("2026-12-02T05:09:30Z", [], True),
        ("2026-12-02T05:09:07Z", [], True),  # exactly the RPO
        ("2026-12-02T05:09:06Z", [], False),
        ("2026-12-02T05:10:06Z", ["binlog binlog.000002 was purged before it was archived"], False),
        (None, [], False),
    ],
)
def test_rpo_and_gaps(latest, gaps, passed):
    ok, meta = judge({"latest_restorable": latest, "gaps": gaps}, 60, now=NOW)
    assert ok is passed
    if latest:
        assert meta["seconds_behind"].value == (NOW - datetime.fromisoformat(latest)).total_seconds()
