"""The one configuration model, shared by the CLI and the Dagster code location.

A YAML file, given as `-c/--config PATH` or `BACKUP_PIPELINES_CONFIG`. Unknown keys
are errors (a typo in a retention key must not silently keep everything forever).
Secrets are never in the file: only paths to 0600 files holding them.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

CONFIG_ENV = "BACKUP_PIPELINES_CONFIG"
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Model):
    endpoint_url: str | None = None
    region: str | None = None
    part_size: Annotated[int, Field(ge=5 * 1024 * 1024)] = 16 * 1024 * 1024
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # Per request, with exponential backoff and full jitter: 8 attempts ride out ~40s of outage.
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 8


class RepositoryConfig(_Model):
    url: str
    s3: S3Settings = S3Settings()
    compression: Literal["zstd", "none"] = "zstd"
    compression_level: Annotated[int, Field(ge=1, le=19)] = 3
    compression_threads: Annotated[int, Field(ge=0, le=64)] = 0  # 0 = one per core
    encryption_key_file: Path | None = None
    # Older keys kept for reading backups written before a key rotation.
    decryption_key_files: list[Path] = []

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError("must start with file:// or s3:// (e.g. file:///var/backups/mysql)")
        if v.startswith("s3://") and len(v) <= len("s3://"):
            raise ValueError("s3:// URL needs a bucket: s3://bucket/prefix")
        return v


class SSHTransport(_Model):
    kind: Literal["ssh"] = "ssh"
    host: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts_file: Path | None = None
    # The remote side: the same CLI installed on the database host, and its config path there.
    remote_command: str = "backup-pipelines"
    remote_config: str = "/etc/backup-pipelines/config.yaml"
    connect_timeout: int = 10


class LocalTransport(_Model):
    kind: Literal["local"] = "local"
    command: str | None = None  # default: this interpreter's backup-pipelines


Transport = Annotated[LocalTransport | SSHTransport, Field(discriminator="kind")]


class RetentionPolicy(_Model):
    """Which physical backups prune may remove. Unset fields do not constrain."""

    keep_full_chains: Annotated[int, Field(ge=1)] | None = None
    keep_daily: Annotated[int, Field(ge=0)] | None = None
    keep_weekly: Annotated[int, Field(ge=0)] | None = None
    keep_monthly: Annotated[int, Field(ge=0)] | None = None
    min_age_days: Annotated[float, Field(ge=0)] | None = None


class DumpRotation(_Model):
    """automysqlbackup's daily/weekly/monthly rotation, applied by the dump's date."""

    keep_daily: Annotated[int, Field(ge=0)] = 7
    keep_weekly: Annotated[int, Field(ge=0)] = 5
    keep_monthly: Annotated[int, Field(ge=0)] = 12
    weekly_day: Annotated[int, Field(ge=1, le=7)] = 6  # ISO weekday, 6 = Saturday
    monthly_day: Annotated[int, Field(ge=1, le=28)] = 1


class DumpSettings(_Model):
    engine: Literal["mysqldump", "mydumper"] = "mysqldump"
    binary: str | None = None
    loader_binary: str | None = None
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    timeout_minutes: Annotated[float, Field(gt=0)] = 240.0  # mydumper runs are killed after this
    databases: list[str] | None = None  # None: every database but the system ones
    rotation: DumpRotation = DumpRotation()


class Schedules(_Model):
    timezone: str = "UTC"
    base_cron: str = "0 1 * * *"
    incremental_minutes: Annotated[int, Field(ge=1, le=1440)] = 15
    dump_cron: str = "30 2 * * *"

    @field_validator("incremental_minutes")
    @classmethod
    def _tiles_the_day(cls, v: int) -> int:
        if (v < 60 and 60 % v) or (v >= 60 and (v % 60 or 1440 % v)):
            raise ValueError(
                "must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or be whole hours "
                "dividing a day (60, 120, 180, 240, 360, 480, 720, 1440)"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/London)") from None
        return v

    @property
    def incremental_cron(self) -> str:
        m = self.incremental_minutes
        return f"*/{m} * * * *" if m < 60 else ("0 0 * * *" if m == 1440 else f"0 */{m // 60} * * *")


_RATE = re.compile(r"^([0-9]+)([KMG]?)$")


def byte_rate(value: object) -> object:
    """`64M`-style byte counts (K/M/G are powers of 1024) to an int; anything else is left to pydantic."""
    if isinstance(value, str):
        m = _RATE.match(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a byte rate like 52428800, 512K, 50M or 1G (per second)")
        return int(m.group(1)) * 1024 ** "_KMG".index(m.group(2) or "_")
    return value


class ThrottleSettings(_Model):
    """How hard a backup of this host may lean on it: what XtraBackup's --throttle and WAL-G's rate limits offer.

    Unset means unthrottled. `engine_iops` is the tools' --throttle: read+write pairs per second of the
    datadir copy (XtraBackup documents its chunk as 10 MB; incrementals count reads only); `stream_bytes_per_second`
    bounds the backup stream we read from the tool (before compression), which paces the tool through
    the pipe; `compression_threads` overrides the repository's; `nice` and `ionice_class` lower the CPU and
    IO priority of the whole pipeline: the tool, our compression, encryption and upload threads.
    """

    engine_iops: Annotated[int, Field(ge=1)] | None = None
    stream_bytes_per_second: Annotated[int, Field(ge=64 * 1024)] | None = None
    compression_threads: Annotated[int, Field(ge=0, le=64)] | None = None  # None: repository.compression_threads
    nice: Annotated[int, Field(ge=0, le=19)] | None = None
    # The kernel honours IO classes only under the bfq (and old cfq) IO schedulers.
    ionice_class: Literal["best-effort", "idle"] | None = None
    ionice_level: Annotated[int, Field(ge=0, le=7)] | None = None  # best-effort only; 7 is the lowest

    @field_validator("stream_bytes_per_second", mode="before")
    @classmethod
    def _rate(cls, v: object) -> object:
        return byte_rate(v)

    @model_validator(mode="after")
    def _ionice(self) -> ThrottleSettings:
        if self.ionice_level is not None and self.ionice_class != "best-effort":
            raise ValueError("ionice_level needs ionice_class: best-effort (the idle class has no levels)")
        return self

    @property
    def lowers_priority(self) -> bool:
        return self.nice is not None or self.ionice_class is not None


class BinlogSettings(_Model):
    """Binlog archiving for point-in-time recovery (docs/pitr.md); the CLI commands need none of it."""

    # Who archives: `stream` (a systemd unit runs `binlog stream`), `push` (Dagster schedules
    # `binlog push` on push_cron), or `none` (no Dagster schedule; the freshness check still runs).
    archiver: Literal["none", "push", "stream"] = "none"
    push_cron: str = "* * * * *"
    rpo_seconds: Annotated[int, Field(ge=1)] = 60  # the freshness check's limit


class HostConfig(_Model):
    engine: Literal["mariabackup", "xtrabackup", "innobackupex"] = "mariabackup"
    datadir: Path
    socket: Path | None = None
    host: str | None = None
    port: int | None = None
    user: str = "backup"
    password_file: Path | None = None
    binary: str | None = None  # the backup tool; default found on PATH
    stream_binary: str | None = None  # mbstream / xbstream
    server_binary: str | None = None  # mariadbd / mysqld, for verification sandboxes
    parallel: Annotated[int, Field(ge=1, le=64)] = 1
    # Buffer pool for --prepare (--use-memory): the main lever on restore time; the tools' default is 100M.
    prepare_memory: Annotated[str, Field(pattern=r"^[0-9]+[KMG]?$")] = "1G"
    extra_backup_args: list[str] = []
    throttle: ThrottleSettings = ThrottleSettings()
    transport: Transport = LocalTransport()
    schedules: Schedules = Schedules()
    retention: RetentionPolicy = RetentionPolicy()
    dump: DumpSettings = DumpSettings()
    binlog: BinlogSettings = BinlogSettings()

    @model_validator(mode="after")
    def _connection(self) -> HostConfig:
        if self.socket is None and self.host is None:
            raise ValueError("set either socket: or host: (with port:) to reach the server")
        for arg in self.extra_backup_args:
            if re.search(r"pass(word)?", arg, re.I):
                raise ValueError("extra_backup_args must not carry passwords; use password_file")
        return self


class StagingTarget(_Model):
    """A server that staging restores may overwrite. `staging: true` is the safety catch."""

    staging: bool = False
    source_host: str | None = None  # restore this host's backups here; None: any host
    datadir: Path
    owner: str | None = None  # chown the restored datadir (e.g. mysql) when running as root
    server_binary: str | None = None
    socket: Path | None = None
    host: str | None = None
    port: int | None = None
    user: str = "root"
    password_file: Path | None = None
    stop_command: list[str]
    start_command: list[str]
    # How long the started server may take to accept connections before the restore is rolled back.
    start_timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    transport: Transport = LocalTransport()


class NotificationConfig(_Model):
    # Refused: a Slack webhook URL is a credential (anyone holding it can post), so it lives in a
    # 0600 file like every other secret. The key is kept only to say so instead of "unknown key".
    webhook_url: str | None = None
    webhook_url_file: Path | None = None

    @field_validator("webhook_url")
    @classmethod
    def _no_inline_secret(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError(
                "a webhook URL is a secret: put it in a file readable only by its owner (chmod 600) and set "
                "webhook_url_file: /path/to/that/file instead"
            )
        return v


_DURATION = re.compile(r"^([0-9]+)([smhDWMY])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}


def duration_seconds(text: str) -> int:
    """duplicity's interval syntax (7D, 12h, 2W, 1M), in seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an interval like 7D, 12h, 2W or 1M")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class OffsiteConfig(_Model):
    """A second, independent copy of the repository, made by duplicity with GPG encryption."""

    target_url: str  # duplicity URL: boto3+s3://offsite-bucket/mysql, or file:///mnt/offsite
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    passphrase_file: Path | None = None  # symmetric GPG
    encrypt_key: str | None = None  # or a public key fingerprint (its secret key is needed to verify/restore)
    key_passphrase_file: Path | None = None  # passphrase of that secret key, where it has one
    gnupg_home: Path | None = None
    full_every: str = "7D"
    remove_older_than: str = "30D"
    volsize_mb: Annotated[int, Field(ge=1)] = 200
    archive_dir: Path = Path("/var/cache/backup-pipelines/duplicity")  # persistent: the signature cache
    name: str = "backup-pipelines"
    mirror_dir: Path | None = None  # an S3 primary is mirrored here first (duplicity reads a directory)
    binary: str = "duplicity"
    num_retries: Annotated[int, Field(ge=1, le=20)] = 5
    cron: str = "0 4 * * *"
    timezone: str = "UTC"
    transport: Transport = LocalTransport()

    @model_validator(mode="after")
    def _checks(self) -> OffsiteConfig:
        if not (self.passphrase_file or self.encrypt_key):
            raise ValueError("offsite copies must be encrypted: set passphrase_file or encrypt_key")
        if not (self.target_url.startswith("boto3+s3://") or self.target_url.startswith("file://")):
            raise ValueError(
                "target_url must be boto3+s3://bucket/prefix (or file:///path); duplicity 0.8's "
                "s3:// is the dead boto2 backend"
            )
        full, keep = duration_seconds(self.full_every), duration_seconds(self.remove_older_than)
        # duplicity 0.8.22 deletes the active chain's remote signatures when the whole active chain is
        # older than remove-older-than's horizon; keeping the horizon beyond two full periods avoids it.
        if keep <= 2 * full:
            raise ValueError(
                f"remove_older_than ({self.remove_older_than}) must be longer than twice "
                f"full_every ({self.full_every}), or restorable chains could be removed"
            )
        return self


MAX_PARTITIONS = 100_000  # Dagster's guidance per asset


class Orchestration(_Model):
    """How the Dagster code location drives the fleet."""

    # Restore points (verification, staging) are daily partitions over this rolling window:
    # restores can only reach what retention keeps, so the partition count never grows with age.
    restore_window_days: Annotated[int, Field(ge=2, le=3660)] = 60
    verify_transport: Transport = LocalTransport()  # where verification sandboxes run
    retry_max: Annotated[int, Field(ge=0, le=10)] = 3
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 30.0
    # A scheduled backup run that starts later than this after its tick is refused, not
    # silently labelled with the old time (the daemon was down, or the queue was stuck).
    max_schedule_lag_minutes: Annotated[float, Field(gt=0)] = 30.0
    timeout_minutes: Annotated[float, Field(gt=0)] = 720.0
    # Scheduled base and incremental backups: "batched" runs every due host of a tick in one run
    # (a step and a partition materialization per host, `batch_parallelism` at once, at most
    # `batch_max_hosts` per run); "per_host" launches one run per host per tick, which costs the
    # orchestrator a Python start-up per backup (docs/dagster.md, "Fleet scale").
    schedule_runs: Literal["batched", "per_host"] = "batched"
    batch_parallelism: Annotated[int, Field(ge=1, le=256)] = 8
    batch_max_hosts: Annotated[int, Field(ge=1, le=5000)] = 100


class Config(_Model):
    repository: RepositoryConfig
    hosts: dict[str, HostConfig]
    staging: dict[str, StagingTarget] = {}
    offsite: OffsiteConfig | None = None
    notifications: NotificationConfig = NotificationConfig()
    orchestration: Orchestration = Orchestration()
    work_dir: Path = Path("/var/tmp/backup-pipelines")
    orphan_grace_hours: Annotated[float, Field(ge=0)] = 6.0
    # A running backup or restore renews its repository lease every lease_seconds / 4; a dead run's
    # lease lapses after lease_seconds, and only then may cleanup remove what it left.
    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 120.0

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, v: dict[str, HostConfig]) -> dict[str, HostConfig]:
        for name in v:
            if not HOST_NAME.match(name):
                raise ValueError(f"host name {name!r} must match {HOST_NAME.pattern}")
        return v

    @model_validator(mode="after")
    def _partition_budget(self) -> Config:
        n = max(len(self.hosts), 1) * self.orchestration.restore_window_days
        if n > MAX_PARTITIONS // 2:
            raise ValueError(
                f"{len(self.hosts)} hosts x {self.orchestration.restore_window_days} restore-window days"
                f" = {n} restore-point partitions; keep it under {MAX_PARTITIONS // 2} (half Dagster's per-asset "
                "guidance) by shortening orchestration.restore_window_days"
            )
        for name, target in self.staging.items():
            if target.source_host is not None and target.source_host not in self.hosts:
                raise ValueError(f"staging.{name}.source_host {target.source_host!r} is not a configured host")
        return self

    def host(self, name: str) -> HostConfig:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise ConfigError(
                f"host {name!r} is not in the configuration (configured hosts: {known})",
                host=name,
                hint="check --host, or add the host under hosts: in the config file",
            ) from None


def override_repository_url(cfg: Config, url: str) -> Config:
    """The config with another repository URL (`--repository`), validated like the file's."""
    try:
        repo = RepositoryConfig.model_validate({**cfg.repository.model_dump(), "url": url})
    except ValidationError as err:
        msg = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--repository {url!r}: {msg}", hint="e.g. --repository file:///restored/copy") from None
    return cfg.model_copy(update={"repository": repo})


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the configuration must be a YAML mapping",
            hint="start from the example in README.md: repository:, hosts:, ...",
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source), hint="fix the keys listed above") from None
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the YAML config from `path`, else from $BACKUP_PIPELINES_CONFIG."""
    chosen = path or os.environ.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(
            "no configuration given",
            hint=f"pass -c/--config PATH or set {CONFIG_ENV}",
        )
    p = Path(chosen)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(
            f"cannot read configuration file {p}: {err.strerror}",
            hint=f"check the path given to -c/--config or {CONFIG_ENV}",
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            f"configuration file {p} is not valid YAML{where}: {problem}",
            hint="fix the YAML syntax there (indentation, an unclosed bracket or quote)",
        ) from None
    return parse_config(data, str(p))


def read_secret_file(path: Path, what: str, *, host: str | None = None) -> str:
    """Read a one-line secret; strict: refused when its group or anyone else may read it.

    The mode is checked on the opened file itself, so a file swapped in between check and
    read cannot slip through.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o044:
                who = "world" if st.st_mode & 0o004 else "group"
                raise ConfigError(
                    f"{what} file {path} is {who}-readable (mode {stat.S_IMODE(st.st_mode):04o})",
                    host=host,
                    hint=f"chmod 600 {path} (only its owner, the user running backup-pipelines, may read it)",
                )
            value = f.read().decode("utf-8")
    except OSError as err:
        raise ConfigError(
            f"cannot read {what} file {path}: {err.strerror}",
            host=host,
            hint="create it with mode 0600, readable by the user running backup-pipelines",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not UTF-8 text", host=host) from None
    return value.strip("\r\n")
