"""Secrets stay secret: file modes, no inline webhook URL, stale credential directories swept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from backup_pipelines.core.config import parse_config, read_secret_file
from backup_pipelines.core.credentials import PREFIX, defaults_extra_file, sweep_stale
from backup_pipelines.core.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("mode", "who"), [(0o640, "group"), (0o604, "world"), (0o644, "world"), (0o440, "group")])
def test_secret_files_readable_by_group_or_others_are_refused(tmp_path, mode, who):
    p = tmp_path / "pw"
    p.write_text("hunter2\n")
    p.chmod(mode)
    with pytest.raises(ConfigError, match=rf"is {who}-readable \(mode 0{mode:o}\)") as err:
        read_secret_file(p, "MySQL password")
    assert "hunter2" not in str(err.value) and f"chmod 600 {p}" in str(err.value)
    p.chmod(0o600)
    assert read_secret_file(p, "MySQL password") == "hunter2"
    p.chmod(0o400)
    assert read_secret_file(p, "MySQL password") == "hunter2"


def test_inline_webhook_url_is_refused():
    doc = {
        "repository": {"url": "file:///tmp/repo"},
        "hosts": {},
        "notifications": {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXXSECRET"},
    }
    with pytest.raises(ConfigError, match=r"notifications\.webhook_url: .*webhook_url_file") as err:
        parse_config(doc, "cfg.yaml")
    assert "XXXXSECRET" not in str(err.value)
    doc["notifications"] = {"webhook_url_file": "/etc/backup-pipelines/hook"}
    assert parse_config(doc, "cfg.yaml").notifications.webhook_url_file == Path("/etc/backup-pipelines/hook")


def test_credential_dirs_of_killed_runs_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        stale = tmp_path / f"{PREFIX}{dead.pid}-abcd1234"
        kept = tmp_path / f"{PREFIX}{alive.pid}-abcd1234"
        for d in (stale, kept):
            d.mkdir(mode=0o700)
            (d / "client.cnf").write_text('[client]\npassword="s3cret"\n')
        old_style = tmp_path / f"{PREFIX}x1y2z3"
        old_style.mkdir()
        os.utime(old_style, (0, 0))
        with defaults_extra_file("backup", None, work_dir=tmp_path) as path:
            assert path.parent.name.startswith(f"{PREFIX}{os.getpid()}-")
            assert not stale.exists() and not old_style.exists()
            assert kept.exists(), "a running backup's credentials were removed"
            assert sweep_stale(tmp_path) == []  # our own live directory stays too
            assert path.exists()
        assert not path.parent.exists()
    finally:
        alive.kill()
        alive.wait()
