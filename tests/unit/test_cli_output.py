"""What an operator reads: `list` columns that fit incremental ids, and --help that explains every option."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

import pytest
import yaml

from backup_pipelines.cli import build_parser, main
from backup_pipelines.core.catalog import BackupManifest, Catalog, StoredObject, new_backup_id
from backup_pipelines.core.crypto import Keyring
from backup_pipelines.core.repository import FileRepository

pytestmark = pytest.mark.unit


def test_list_columns_fit_incremental_ids(tmp_path, capsys):
    repo = FileRepository(f"file://{tmp_path / 'repo'}")
    catalog = Catalog(repo, Keyring(None))
    full_id = new_backup_id("full", datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    inc_id = new_backup_id("incremental", datetime(2026, 11, 20, 1, 15, tzinfo=UTC))
    for bid, kind, parent, lsn in (
        (full_id, "full", None, (0, 123_456_789_012)),
        (inc_id, "incremental", full_id, (123_456_789_012, 987_654_321_098_765)),
    ):
        when = datetime(2026, 11, 20, 1, 15, tzinfo=UTC)
        catalog.write_manifest(
            BackupManifest(
                id=bid,
                host="db1",
                kind=kind,
                parent_id=parent,
                engine="mariabackup",
                from_lsn=lsn[0],
                to_lsn=lsn[1],
                started_at=when,
                finished_at=when,
                duration_seconds=1.0,
                size_bytes=5 * 1024**4,
                source_size_bytes=1,
                compression="zstd",
                objects=[StoredObject(name="data", key=f"hosts/db1/backups/{bid}/data", size=1, sha256="0" * 64)],
            )
        )
    cfg = {
        "repository": {"url": repo.url},
        "hosts": {"db1": {"datadir": "/x", "socket": "/s"}},
        "work_dir": str(tmp_path / "w"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-c", str(tmp_path / "c.yaml"), "list", "--host", "db1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    rows = [re.split(r"\s{2,}", line) for line in lines]
    assert all(len(r) == 7 for r in rows), lines  # no value runs into its neighbour
    assert rows[2][:3] == [inc_id, "incremental", full_id]
    assert rows[2][4] == "987654321098765"
    for col in ("KIND", "PARENT", "FINISHED (UTC)"):  # left-aligned columns start where their heading does
        start = lines[0].index(col)
        for line in lines[1:]:
            assert line[start - 2 : start] == "  " and line[start] != " ", (col, line)


@pytest.mark.parametrize(
    "command", [["restore"], ["verify"], ["stream", "put"], ["stream", "get"], ["staging-restore"]]
)
def test_help_describes_every_option(command, capsys):
    parser = build_parser()
    sub = parser
    for name in command:
        action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
        sub = action.choices[name]
    undocumented = [a.dest for a in sub._actions if a.help in (None, "") and not isinstance(a, argparse._HelpAction)]
    assert undocumented == [], f"{' '.join(command)} --help leaves {undocumented} unexplained"
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    if "--at" in text:
        assert "without a zone is UTC" in text and "default: the newest backup" in text


def test_version_and_exit_codes_in_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.match(r"backup-pipelines \d+\.\d+", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in (2, 3, 4, 5, 6, 7, 8, 9, 10, 143):
        assert re.search(rf"^\s+{code}\s+\w", out, re.M), f"exit code {code} missing from --help"


def test_an_internal_error_with_v_shows_the_traceback_and_does_not_ask_for_v(monkeypatch, capsys):
    """A bug is the one thing no input can provoke on purpose: plant one in keygen."""
    import backup_pipelines.core.crypto as crypto

    def broken() -> str:
        raise RuntimeError("planted bug")

    monkeypatch.setattr(crypto, "generate_key_text", broken)
    assert main(["keygen"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: planted bug" in err and "re-run with -v" in err and "Traceback" not in err
    assert main(["-v", "keygen"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "re-run with -v" not in err and "the traceback is above" in err
