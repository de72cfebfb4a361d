"""The worker transports against a real sshd on loopback: the same CLI, JSON back, typed errors."""

from __future__ import annotations

import sys

import pytest

from backup_pipelines.core.config import SSHTransport
from backup_pipelines.core.errors import ConfigError, NotFoundError, RefusedError, TransportError
from backup_pipelines.core.mysqld import free_port
from backup_pipelines.core.transport import LocalWorker, SSHWorker, worker_for
from tests.fixtures.mariadb import fingerprint_datadir, load_shop

pytestmark = pytest.mark.integration


@pytest.fixture
def ssh_spec(sshd, tmp_path):
    return {
        "kind": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "user": sshd.user,
        "key_file": str(sshd.client_key),
        "known_hosts_file": str(sshd.known_hosts),
        "remote_command": f"{sys.executable} -m backup_pipelines.cli",
        "remote_config": str(tmp_path / "config.yaml"),
    }


def test_backup_and_restore_over_ssh(ssh_spec, source, make_config, tmp_path):
    cfg = make_config(host_overrides={"transport": ssh_spec})
    load_shop(source)
    worker = worker_for("db1", cfg.host("db1").transport, "/nonexistent/local/config.yaml")
    assert isinstance(worker, SSHWorker)
    lines: list[str] = []
    full = worker.run_json(["backup", "full", "--host", "db1", "--json"], on_stderr_line=lines.append)
    source.sql("INSERT INTO shop.orders (account, amount, note) VALUES (9, 9, 'over ssh')")
    inc = worker.run_json(["backup", "incremental", "--host", "db1", "--json"])
    assert full["kind"] == "full" and inc["parent_id"] == full["id"]
    listed = worker.run_json(["list", "--host", "db1", "--json"])
    assert [e["id"] for e in listed["backups"]] == [full["id"], inc["id"]]
    expected = source.fingerprint()
    res = worker.run_json(["restore", "--host", "db1", "--target-datadir", str(tmp_path / "r"), "--json"])
    assert res["chain"] == [full["id"], inc["id"]]
    assert fingerprint_datadir(tmp_path / "r", tmp_path / "run") == expected
    # remote failures come back typed, with the remote message
    with pytest.raises(RefusedError, match="not empty") as err:
        worker.run_json(["restore", "--host", "db1", "--target-datadir", str(tmp_path / "r"), "--json"])
    assert "on worker db1 (ssh" in str(err.value)
    with pytest.raises(NotFoundError, match="not in the catalog"):
        worker.run_json(
            [
                "restore",
                "--host",
                "db1",
                "--target-datadir",
                str(tmp_path / "r2"),
                "--backup-id",
                "nope",
                "--json",
            ]
        )


def test_unreachable_and_untrusted_hosts(ssh_spec, tmp_path):
    spec = SSHTransport(**{k: v for k, v in ssh_spec.items() if k != "kind"})
    down = SSHWorker("db1", spec.model_copy(update={"port": free_port(), "connect_timeout": 3}))
    with pytest.raises(TransportError, match="cannot reach worker") as err:
        down.run_json(["list", "--host", "db1", "--json"])
    assert "Connection refused" in (err.value.stderr_tail or "")
    (tmp_path / "empty_known_hosts").write_text("")
    untrusted = SSHWorker("db1", spec.model_copy(update={"known_hosts_file": tmp_path / "empty_known_hosts"}))
    with pytest.raises(TransportError, match="cannot reach worker") as err:
        untrusted.run_json(["list", "--host", "db1", "--json"])
    assert "Host key verification failed" in (err.value.stderr_tail or "")
    missing = SSHWorker("db1", spec.model_copy(update={"remote_command": "/nonexistent/backup-pipelines"}))
    with pytest.raises(TransportError, match="not installed"):
        missing.run_json(["list", "--host", "db1", "--json"])


def test_local_worker_maps_exit_codes(source, make_config, tmp_path):
    make_config()
    worker = LocalWorker("db1", tmp_path / "config.yaml")
    with pytest.raises(NotFoundError, match="no completed backup to take an incremental from"):
        worker.run_json(["backup", "incremental", "--host", "db1", "--json"])
    with pytest.raises(ConfigError, match="not in the configuration"):
        worker.run_json(["list", "--host", "nope", "--json"])
    assert worker.run_json(["list", "--host", "db1", "--json"]) == {"host": "db1", "backups": [], "binlogs": None}
