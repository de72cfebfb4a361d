"""Full + incrementals with every kind of change between them; every point restores exactly."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from backup_pipelines.cli import main
from backup_pipelines.core.backup import run_physical_backup
from backup_pipelines.core.restore import restore_chain
from backup_pipelines.core.session import Session
from tests.fixtures.mariadb import MoneyMover, fingerprint_datadir, load_shop

pytestmark = pytest.mark.integration


def _changes(source, step: int) -> None:
    """Step 1: inserts/updates/deletes. Step 2: a new table. Step 3: a dropped table and more DML."""
    if step == 1:
        source.sql(
            "INSERT INTO orders (account, amount, note) SELECT 1 + seq % 200, 7, 'round one' FROM seq_1_to_1500",
            database="shop",
        )
        source.sql("UPDATE shop.accounts SET balance = balance + 5 WHERE id % 3 = 0")
        source.sql("DELETE FROM shop.orders WHERE id % 11 = 0")
    elif step == 2:
        source.sql("CREATE TABLE shop.audit (id INT AUTO_INCREMENT PRIMARY KEY, what TEXT) ENGINE=InnoDB")
        source.sql("INSERT INTO audit (what) SELECT REPEAT('x', seq % 300) FROM seq_1_to_800", database="shop")
        source.sql("UPDATE inventory.items SET qty = qty * 2 WHERE qty % 5 = 0")
    elif step == 3:
        source.sql("DROP TABLE inventory.items")
        source.sql("DELETE FROM shop.audit WHERE id % 2 = 0")
        source.sql("INSERT INTO orders (account, amount, note) VALUES (1, 1, 'last')", database="shop")


def _repo(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if kind == "file":
        return f"file://{tmp_path / 'repo'}", None
    # s3rver: a second S3 implementation (no CRC echoes, no ListMultipartUploads).
    server = request.getfixturevalue("s3_server" if kind == "s3" else "s3rver_server")
    bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "s3rver_bucket")
    return f"s3://{bucket}/mysql/backups", server.endpoint_url


@pytest.mark.parametrize(
    ("kind", "encrypted"),
    [("file", True), ("file", False), ("s3", True), ("s3", False), ("s3rver", True)],
    ids=["file-encrypted", "file-plain", "s3-encrypted", "s3-plain", "s3rver-encrypted"],
)
def test_every_point_restores_exactly(kind, encrypted, request, source, make_config, repo_key, tmp_path, capsys):
    url, endpoint = _repo(kind, request, tmp_path)
    cfg = make_config(url, key_file=repo_key if encrypted else None, s3_endpoint=endpoint)
    load_shop(source)
    session = Session.open(cfg)

    points = []
    for step in range(4):
        if step:
            _changes(source, step)
        m = run_physical_backup(session, "db1", "full" if step == 0 else "incremental")
        points.append((m, source.fingerprint()))
    fulls = [m for m, _ in points if m.kind == "full"]
    assert len(fulls) == 1 and all(m.parent_id == points[i][0].id for i, (m, _) in enumerate(points[1:]))
    assert points[1][1] != points[0][1] and "inventory.items" not in points[3][1]

    # The catalog as an operator sees it, through the CLI.
    assert main(["-c", str(tmp_path / "config.yaml"), "list", "--host", "db1", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed["backups"]] == [m.id for m, _ in points]
    for entry, (m, _) in zip(listed["backups"], points, strict=True):
        assert entry["kind"] == m.kind and entry["parent_id"] == m.parent_id
        assert entry["from_lsn"] == m.from_lsn and entry["to_lsn"] >= entry["from_lsn"]
        assert entry["size_bytes"] > 0 and entry["binlog"]["file"].startswith("binlog.")
        assert datetime.fromisoformat(entry["started_at"]).utcoffset().total_seconds() == 0
        assert (entry["encryption"] is not None) == encrypted
        assert all(len(o["sha256"]) == 64 for o in entry["objects"])
    if kind == "file":
        manifests = list((tmp_path / "repo").rglob("manifest.json"))
        assert len(manifests) == len(points)
        for p in manifests:  # with a key, manifests are sealed too: every stored byte is encrypted
            assert (b'"kind"' in p.read_bytes()) != encrypted

    # Restore every point, alternately by id (CLI) and by time (library), and compare checksums.
    for i, (m, expected) in enumerate(points):
        target = tmp_path / f"restore-{i}"
        if i % 2 == 0:
            rc = main(
                [
                    "-c",
                    str(tmp_path / "config.yaml"),
                    "restore",
                    "--host",
                    "db1",
                    "--target-datadir",
                    str(target),
                    "--backup-id",
                    m.id,
                ]
            )
            assert rc == 0
        else:
            res = restore_chain(session, "db1", target, at=m.finished_at.isoformat())
            assert res.backup_id == m.id and len(res.chain) == i + 1
        assert fingerprint_datadir(target, tmp_path / f"run-{i}") == expected, f"point {i} ({m.id}) differs"


def test_backup_under_concurrent_transfers_keeps_the_invariant(source, make_config, tmp_path):
    cfg = make_config()
    load_shop(source, orders=60000)
    total = source.sql("SELECT SUM(balance) FROM shop.accounts")[0][0]
    session = Session.open(cfg)
    with MoneyMover(source) as mover:
        full = run_physical_backup(session, "db1", "full")
        before_incr = mover.transfers
        incr = run_physical_backup(session, "db1", "incremental")
    assert mover.transfers > before_incr > 0, "the writer must have run during the backups"
    for m in (full, incr):
        target = tmp_path / f"restored-{m.kind}"
        restore_chain(session, "db1", target, backup_id=m.id)
        fp = fingerprint_datadir(target, tmp_path / f"run-{m.kind}")
        assert fp["shop.accounts"]["rows"] == 200
        from backup_pipelines.core.mysqld import MariaDBServer

        with MariaDBServer(target, tmp_path / f"run2-{m.kind}", skip_grant_tables=True) as srv:
            assert srv.sql("SELECT SUM(balance) FROM shop.accounts")[0][0] == total


def test_applied_incrementals_are_deleted_before_the_move_and_no_scratch_remains(
    source, make_config, tmp_path, monkeypatch
):
    import backup_pipelines.core.restore as restore_mod

    load_shop(source)
    session = Session.open(make_config())
    run_physical_backup(session, "db1", "full")
    for step in (1, 2):
        _changes(source, step)
        run_physical_backup(session, "db1", "incremental")
    expected = source.fingerprint()

    seen: dict[str, list[str]] = {}
    real_run = restore_mod.run

    def spy(cmd, **kw):
        if any(a == "--move-back" for a in cmd):
            work = Path(next(a for a in cmd if a.startswith("--target-dir=")).split("=", 1)[1]).parent
            seen["at_move"] = sorted(p.name for p in work.iterdir())
        return real_run(cmd, **kw)

    monkeypatch.setattr(restore_mod, "run", spy)
    target = tmp_path / "restored"
    res = restore_chain(session, "db1", target)
    assert len(res.chain) == 3
    assert seen["at_move"] == ["000-full"], "applied incrementals must be gone before the move"
    assert [p.name for p in tmp_path.iterdir() if ".bp-restore-" in p.name] == []
    assert fingerprint_datadir(target, tmp_path / "run") == expected
