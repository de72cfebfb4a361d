"""Command building for all three engines; mariabackup is also run for real in integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_pipelines.core.config import HostConfig
from backup_pipelines.core.credentials import render_option_file
from backup_pipelines.core.engines import engine_for, engine_named, parse_checkpoints, parse_tool_info
from backup_pipelines.core.errors import ConfigError

pytestmark = pytest.mark.unit

CNF = Path("/tmp/x/client.cnf")
LSN = Path("/tmp/x/lsn")


def host(engine: str, **kw) -> HostConfig:
    kw.setdefault("socket", Path("/run/mysqld/mysqld.sock"))
    return HostConfig(engine=engine, datadir=Path("/var/lib/mysql"), **kw)


@pytest.mark.parametrize("engine", ["mariabackup", "xtrabackup", "innobackupex"])
def test_defaults_file_comes_first_and_no_secret_in_argv(engine):
    cmd = engine_for(host(engine)).backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=None)
    assert cmd[1] == f"--defaults-extra-file={CNF}"
    assert "--stream=xbstream" in cmd and f"--extra-lsndir={LSN}" in cmd
    assert not any("password" in a for a in cmd)


def test_mariabackup_full_and_incremental():
    e = engine_for(host("mariabackup", parallel=4, binary="/opt/mb/mariabackup"))
    full = e.backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=None)
    assert full[0] == "/opt/mb/mariabackup" and "--backup" in full and "--parallel=4" in full
    assert "--socket=/run/mysqld/mysqld.sock" in full and "--datadir=/var/lib/mysql" in full
    assert not any(a.startswith("--incremental") for a in full)
    inc = e.backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=44404)
    assert inc[-1] == "--incremental-lsn=44404"
    assert e.extract_command(Path("/r/base")) == ["mbstream", "-x", "-C", "/r/base"]


def test_mariabackup_prepare_has_no_apply_log_only():
    e = engine_for(host("mariabackup"))
    cmds = e.prepare_commands(Path("/r/0"), [Path("/r/1"), Path("/r/2")])
    mem = "--use-memory=1G"  # the prepare buffer pool: the tools' 100M default makes restores slow
    assert cmds == [
        ["mariabackup", "--no-defaults", "--prepare", mem, "--target-dir=/r/0"],
        ["mariabackup", "--no-defaults", "--prepare", mem, "--target-dir=/r/0", "--incremental-dir=/r/1"],
        ["mariabackup", "--no-defaults", "--prepare", mem, "--target-dir=/r/0", "--incremental-dir=/r/2"],
    ]
    assert e.copy_back_command(Path("/r/0"), Path("/d"), Path("/s")) == [
        "mariabackup",
        "--no-defaults",
        "--move-back",
        "--target-dir=/r/0",
        "--datadir=/d",
    ]


def test_xtrabackup_apply_log_only_on_all_but_last_step():
    e = engine_for(host("xtrabackup", host="db.internal", port=3307, socket=None))
    cmd = e.backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=10)
    assert cmd[0] == "xtrabackup" and "--host=db.internal" in cmd and "--port=3307" in cmd
    assert "--incremental-lsn=10" in cmd
    assert e.extract_command(Path("/r"))[0] == "xbstream"
    cmds = e.prepare_commands(Path("/r/0"), [Path("/r/1"), Path("/r/2")])
    assert ["--apply-log-only" in c for c in cmds] == [True, True, False]
    assert cmds[2][-1] == "--incremental-dir=/r/2"
    only_full = e.prepare_commands(Path("/r/0"), [])
    assert only_full == [["xtrabackup", "--no-defaults", "--prepare", "--use-memory=1G", "--target-dir=/r/0"]]


def test_innobackupex_legacy_flags(tmp_path):
    e = engine_for(host("innobackupex"))
    cmd = e.backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=99)
    assert cmd[0] == "innobackupex" and cmd[-1] == str(LSN)  # positional scratch dir
    assert "--incremental" in cmd and "--incremental-lsn=99" in cmd and "--backup" not in cmd
    cmds = e.prepare_commands(Path("/r/0"), [Path("/r/1"), Path("/r/2")])
    assert cmds[0] == ["innobackupex", "--no-defaults", "--apply-log", "--use-memory=1G", "--redo-only", "/r/0"]
    assert "--redo-only" in cmds[1] and "--redo-only" not in cmds[2]
    assert cmds[-1] == ["innobackupex", "--no-defaults", "--apply-log", "--use-memory=1G", "/r/0"]
    cb = e.copy_back_command(Path("/r/0"), Path("/data"), tmp_path)
    assert cb[1].startswith("--defaults-file=") and cb[2:] == ["--move-back", "/r/0"]
    assert "datadir=/data" in (tmp_path / "copy-back.cnf").read_text()


def test_checkpoints_and_info_parsing():
    cp = parse_checkpoints("backup_type = incremental\nfrom_lsn = 44404\nto_lsn = 51000\nlast_lsn = 51923\n")
    assert (cp.backup_type, cp.from_lsn, cp.to_lsn, cp.last_lsn) == ("incremental", 44404, 51000, 51923)
    with pytest.raises(ValueError):
        parse_checkpoints("backup_type = full\n")
    info = parse_tool_info(
        "tool_version = 10.11.19-MariaDB\nserver_version = 10.11.19-MariaDB-log\n"
        "binlog_pos = filename 'binlog.000001', position '1202', GTID of the last change '0-1-5'\n"
    )
    assert info.binlog is not None and (info.binlog.file, info.binlog.position, info.binlog.gtid) == (
        "binlog.000001",
        1202,
        "0-1-5",
    )
    xb8 = parse_tool_info("binlog_pos = filename 'mysql-bin.000003', position '157'\n")
    assert xb8.binlog is not None and xb8.binlog.gtid is None and xb8.binlog.position == 157


def test_option_file_quotes_passwords():
    text = render_option_file("backup", 'p"a\\ss', groups=("client",))
    assert text == '[client]\nuser="backup"\npassword="p\\"a\\\\ss"\n'


@pytest.mark.parametrize("engine", ["mariabackup", "xtrabackup", "innobackupex"])
@pytest.mark.parametrize("lsn", [None, 777])
def test_engine_read_throttle_is_passed_as_throttle(engine, lsn):
    throttled = engine_for(host(engine, throttle={"engine_iops": 40}))
    cmd = throttled.backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=lsn)
    assert cmd.count("--throttle=40") == 1
    assert cmd[1] == f"--defaults-extra-file={CNF}"  # still first
    if engine == "innobackupex":
        assert cmd[-1] == str(LSN)  # the positional scratch dir stays last
    elif lsn is not None:
        assert cmd[-1] == f"--incremental-lsn={lsn}"
    plain = engine_for(host(engine)).backup_command(defaults_file=CNF, lsn_dir=LSN, incremental_lsn=lsn)
    assert not any(a.startswith("--throttle") for a in plain)


def test_restores_use_the_engine_that_took_the_backup_not_the_configured_one():
    moved = host(
        "xtrabackup", binary="/opt/xb/bin/xtrabackup", stream_binary="/opt/xb/bin/xbstream", prepare_memory="4G"
    )
    old = engine_named("mariabackup", moved)  # the host moved engines; its old chains are mariabackup's
    assert old.name == "mariabackup" and old.binary == "mariabackup" and old.stream_binary == "mbstream"
    assert "--use-memory=4G" in old.prepare_commands(Path("/b"), [])[0]  # settings naming no binary are kept
    same = engine_named("xtrabackup", moved)
    assert same.binary == "/opt/xb/bin/xtrabackup"  # the host's own engine keeps its configured binaries
    gone = engine_named("innobackupex", None)  # a decommissioned host: defaults found on PATH
    assert gone.name == "innobackupex" and gone.binary == "innobackupex"
    with pytest.raises(ConfigError, match="engine 'nope' cannot be restored"):
        engine_named("nope", None)
