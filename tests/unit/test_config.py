"""Configuration: what the acceptance YAML looks like, and clear errors for what is wrong."""

from __future__ import annotations

import pytest
import yaml

from backup_pipelines.core.config import load_config, parse_config, read_secret_file
from backup_pipelines.core.errors import ConfigError

pytestmark = pytest.mark.unit

EXAMPLE = """
repository:
  url: file:///var/backups/mysql
  s3: {endpoint_url: http://127.0.0.1:9000, region: eu-west-1}
  compression: zstd
  encryption_key_file: /etc/backup-pipelines/repo.key
hosts:
  db1:
    engine: mariabackup
    datadir: /var/lib/mysql
    socket: /run/mysqld/mysqld.sock
    user: backup
    password_file: /etc/backup-pipelines/db1.password
"""


def test_the_documented_example_parses():
    cfg = parse_config(yaml.safe_load(EXAMPLE))
    assert cfg.host("db1").engine == "mariabackup"
    assert cfg.repository.s3.region == "eu-west-1"
    assert str(cfg.repository.encryption_key_file) == "/etc/backup-pipelines/repo.key"


def test_unknown_and_missing_keys_are_named():
    doc = yaml.safe_load(EXAMPLE)
    doc["hosts"]["db1"]["retension"] = {}
    del doc["hosts"]["db1"]["datadir"]
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "x.yaml")
    text = str(err.value)
    assert "hosts.db1.retension: unknown key" in text
    assert "hosts.db1.datadir: required key is missing" in text
    assert "x.yaml" in text


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d["repository"].update(url="ftp://x"), "file:// or s3://"),
        (lambda d: d["hosts"]["db1"].pop("socket"), "socket: or host:"),
        (lambda d: d["hosts"]["db1"].update(engine="mysqlbackup"), "engine"),
        (lambda d: d["hosts"]["db1"].update(extra_backup_args=["--password=x"]), "passwords"),
        (lambda d: d["hosts"].update({"bad host": d["hosts"]["db1"]}), "host name"),
        (lambda d: d["repository"].update(compression="gzip"), "compression"),
    ],
)
def test_invalid_values(mutate, needle):
    doc = yaml.safe_load(EXAMPLE)
    mutate(doc)
    with pytest.raises(ConfigError, match=needle):
        parse_config(doc)


def test_unknown_host_lists_the_configured_ones():
    cfg = parse_config(yaml.safe_load(EXAMPLE))
    with pytest.raises(ConfigError, match="configured hosts: db1"):
        cfg.host("db2")


def test_config_from_env(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text(EXAMPLE)
    monkeypatch.setenv("BACKUP_PIPELINES_CONFIG", str(p))
    assert "db1" in load_config().hosts
    monkeypatch.delenv("BACKUP_PIPELINES_CONFIG")
    with pytest.raises(ConfigError, match="--config"):
        load_config()
    p.write_text("repository: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_secret_files_must_not_be_world_readable(tmp_path):
    p = tmp_path / "pw"
    p.write_text("hunter2\n")
    p.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(p, "MySQL password")
    p.chmod(0o600)
    assert read_secret_file(p, "MySQL password") == "hunter2"


def test_cli_names_the_same_config_variable_as_the_core() -> None:
    """The CLI keeps its own copy so that `stream put/get` start without importing pydantic."""
    from backup_pipelines import cli
    from backup_pipelines.core import config

    assert cli.CONFIG_ENV == config.CONFIG_ENV


def _with_throttle(throttle: dict) -> dict:
    doc = yaml.safe_load(EXAMPLE)
    doc["hosts"]["db1"]["throttle"] = throttle
    return doc


def test_throttle_settings_parse_with_byte_suffixes():
    cfg = parse_config(
        _with_throttle(
            {
                "engine_iops": 20,
                "stream_bytes_per_second": "50M",
                "compression_threads": 1,
                "nice": 10,
                "ionice_class": "best-effort",
                "ionice_level": 7,
            }
        )
    )
    t = cfg.hosts["db1"].throttle
    assert (t.engine_iops, t.stream_bytes_per_second, t.compression_threads) == (20, 50 * 2**20, 1)
    assert t.lowers_priority and (t.nice, t.ionice_class, t.ionice_level) == (10, "best-effort", 7)
    assert (
        parse_config(_with_throttle({"stream_bytes_per_second": 1048576})).hosts["db1"].throttle.lowers_priority
        is False
    )
    default = parse_config(yaml.safe_load(EXAMPLE)).hosts["db1"].throttle
    assert default.engine_iops is None and default.stream_bytes_per_second is None and not default.lowers_priority


@pytest.mark.parametrize(
    ("throttle", "message"),
    [
        ({"stream_bytes_per_second": "fast"}, "byte rate"),
        ({"stream_bytes_per_second": "1K"}, "greater than or equal"),
        ({"nice": 25}, "less than or equal"),
        ({"ionice_class": "realtime"}, "ionice_class"),
        ({"ionice_class": "idle", "ionice_level": 3}, "needs ionice_class: best-effort"),
        ({"throttel": 1}, "unknown key"),
    ],
)
def test_bad_throttle_settings_are_named(throttle, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_with_throttle(throttle))
    assert "hosts.db1.throttle" in str(err.value) and message in str(err.value)
