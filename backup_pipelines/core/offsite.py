"""Offsite copies: the whole repository, copied by duplicity with GPG to an independent location.

What GOV.UK did nightly, with the sharp edges of Debian's duplicity 0.8.22 filed off:
  - `--full-if-older-than` gives incrementals between fulls; `verify` after every run downloads
    and decrypts every volume of the chain (it proves restorability, not equality);
  - a symmetric passphrase is checked against the newest remote manifest *before* a run, because
    0.8.22 happily appends an incremental encrypted with a wrong passphrase (exit 0);
  - any `ERROR` record in duplicity's machine log fails the run, whatever its exit status;
  - secrets travel in PASSPHRASE (duplicity's interface) and files, never argv.
An S3 primary is first mirrored into a local directory (duplicity reads a directory); a file
primary is read in place. Reports go to the repository under `offsite/`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .config import Config, OffsiteConfig, read_secret_file
from .errors import (
    BackupPipelinesError,
    ConfigError,
    NotFoundError,
    RefusedError,
    StorageError,
    ToolError,
    WrongKeyError,
    tail,
)
from .locks import host_lock
from .process import capture
from .repository import Repository
from .session import Session

log = logging.getLogger(__name__)
PARTIAL_REGEXP = r"\.partial-[0-9a-f]+$"

# duplicity's exit codes (log.ErrorCode) worth explaining.
_EXIT_HINTS = {
    11: "the restore destination exists",
    17: "no chain or signatures to make an incremental from",
    23: "the target bucket does not exist, the URL is wrong, or another duplicity holds the lock",
    30: "duplicity crashed (a passphrase was needed and none was given?)",
    31: "GPG failed: wrong passphrase, missing secret key, or an untrusted public key",
    42: "the source path or hostname differs from the previous run",
    50: "the storage backend gave up after retries (endpoint unreachable? python3-boto3 missing?)",
}


@dataclass
class Record:
    level: str
    code: int
    extra: str
    lines: list[str] = field(default_factory=list)


def parse_machine_log(text: str) -> list[Record]:
    """duplicity --log-file records: `LEVEL CODE [extra]`, data lines, `. ` message lines, blank line."""
    records: list[Record] = []
    current: Record | None = None
    for line in text.splitlines():
        if current is None:
            m = re.match(r"^(DEBUG|INFO|NOTICE|WARNING|ERROR)\s+(\d+)\s*(.*)$", line)
            if m:
                current = Record(m.group(1), int(m.group(2)), m.group(3).strip())
            continue
        if not line.strip():
            records.append(current)
            current = None
        else:
            current.lines.append(line)
    if current is not None:
        records.append(current)
    return records


def parse_collection_status(records: list[Record]) -> dict[str, Any]:
    """Chains and sets from the INFO 3 record of collection-status."""
    chains: list[dict[str, Any]] = []
    status: dict[str, Any] = {"chains": chains}
    for rec in records:
        if rec.level != "INFO" or rec.code != 3:
            continue
        for line in rec.lines:
            if line.startswith(". "):
                break
            m = re.match(r"^\s+(full|inc)\s+(\d{8}T\d{6}Z)\s+(\d+)\s+(enc|noenc)", line)
            if m and chains:
                chains[-1]["sets"].append(
                    {
                        "type": m.group(1),
                        "time": datetime.strptime(m.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat(),
                        "volumes": int(m.group(3)),
                        "encrypted": m.group(4) == "enc",
                    }
                )
            elif line.startswith("chain-complete"):
                chains.append({"primary": True, "sets": []})
            elif line.startswith("chain-no-sig"):
                chains.append({"primary": False, "sets": []})
            elif m2 := re.match(r"^(orphaned-sets-num|incomplete-sets-num)\s+(\d+)", line):
                status[m2.group(1).replace("-", "_")] = int(m2.group(2))
    sets = [s for c in chains for s in c["sets"]]
    status["chain_count"] = len(chains)
    status["set_count"] = len(sets)
    status["volume_count"] = sum(s["volumes"] for s in sets)
    fulls = [s["time"] for s in sets if s["type"] == "full"]
    status["last_full"] = max(fulls) if fulls else None
    status["newest_set"] = max((s["time"] for s in sets), default=None)
    return status


class Duplicity:
    def __init__(self, cfg: OffsiteConfig, work_dir: Path) -> None:
        self.cfg = cfg
        self.work_dir = work_dir

    def binary(self) -> str:
        found = shutil.which(self.cfg.binary)
        if not found:
            raise ConfigError(f"cannot find {self.cfg.binary!r}", hint="apt install duplicity python3-boto3")
        return found

    def common(self) -> list[str]:
        c = self.cfg
        args = [
            f"--archive-dir={c.archive_dir}",
            f"--name={c.name}",
            f"--tempdir={self.work_dir}",
            f"--volsize={c.volsize_mb}",
            f"--num-retries={c.num_retries}",
            "--backend-retry-delay=5",
            "--allow-source-mismatch",
            "--no-print-statistics",
        ]
        if c.target_url.startswith("boto3+s3://"):
            if c.s3_endpoint_url:
                args.append(f"--s3-endpoint-url={c.s3_endpoint_url}")
            if c.s3_region:
                args.append(f"--s3-region-name={c.s3_region}")
        if c.encrypt_key:
            args += [f"--encrypt-key={c.encrypt_key}", "--gpg-options=--trust-model=always"]
        return args

    def env(self, *, decrypting: bool) -> dict[str, str]:
        env = dict(os.environ)
        c = self.cfg
        if c.gnupg_home:
            env["GNUPGHOME"] = str(c.gnupg_home)
        if c.passphrase_file:
            env["PASSPHRASE"] = read_secret_file(c.passphrase_file, "offsite passphrase")
        elif decrypting:
            # public-key mode: the secret key's passphrase, or '' (unset makes 0.8.22 prompt and crash)
            env["PASSPHRASE"] = (
                read_secret_file(c.key_passphrase_file, "offsite key passphrase") if c.key_passphrase_file else ""
            )
        else:
            env.pop("PASSPHRASE", None)
        return env

    def run(
        self,
        args: list[str],
        *,
        what: str,
        decrypting: bool = False,
        ok_codes: tuple[int, ...] = (0,),
        timeout: float = 6 * 3600,
    ) -> tuple[list[Record], str]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.archive_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.work_dir / f"duplicity-{uuid.uuid4().hex[:8]}.log"
        argv = [self.binary(), *args, f"--log-file={logfile}"]
        log.info("offsite: %s", " ".join(argv))
        try:
            res = capture(argv, what=what, env=self.env(decrypting=decrypting), timeout=timeout)
            records = parse_machine_log(logfile.read_text(errors="replace")) if logfile.exists() else []
        finally:
            logfile.unlink(missing_ok=True)
        errors = [r for r in records if r.level == "ERROR"]
        if res.returncode not in ok_codes or errors:
            detail = "; ".join(" ".join(r.lines)[:300] for r in errors[:3]) or tail(res.stderr, 6)
            message = f"{what}: duplicity exited with status {res.returncode}"
            if res.returncode == 0 and errors:
                message = f"{what}: duplicity reported errors although it exited 0"
            hint = _EXIT_HINTS.get(res.returncode)
            cls = WrongKeyError if res.returncode == 31 else ToolError
            raise cls(
                message,
                command=" ".join(argv[:2]) + " ...",
                stderr_tail=detail or None,
                hint=hint or "read the duplicity output above",
            )
        return records, res.stdout

    # -- the operations ---------------------------------------------------------------------
    def backup(self, source: Path) -> list[Record]:
        records, _ = self.run(
            [
                f"--full-if-older-than={self.cfg.full_every}",
                *self.common(),
                f"--exclude-regexp={PARTIAL_REGEXP}",
                str(source),
                self.cfg.target_url,
            ],
            what="offsite backup",
        )
        return records

    def verify(self, source: Path) -> str:
        _, out = self.run(
            ["verify", *self.common(), f"--exclude-regexp={PARTIAL_REGEXP}", self.cfg.target_url, str(source)],
            what="offsite verify",
            decrypting=True,
            ok_codes=(0, 1),
        )
        m = re.search(r"Verify complete: .*", out)
        return m.group(0) if m else "verify complete"

    def remove_old(self) -> None:
        self.run(
            ["remove-older-than", self.cfg.remove_older_than, "--force", *self.common(), self.cfg.target_url],
            what="offsite retention",
        )

    def status(self) -> dict[str, Any]:
        records, _ = self.run(
            ["collection-status", *self.common(), self.cfg.target_url], what="offsite collection-status"
        )
        return parse_collection_status(records)

    def restore(self, dest: Path, at: str | None = None) -> None:
        args = ["restore", *self.common()]
        if at:
            args.append(f"--time={at}")
        self.run([*args, self.cfg.target_url, str(dest)], what="offsite restore", decrypting=True)

    # -- passphrase preflight ---------------------------------------------------------------
    def newest_remote_manifest(self) -> bytes | None:
        url = self.cfg.target_url
        names: list[tuple[str, Any]] = []
        if url.startswith("file://"):
            root = Path(unquote(urlparse(url).path))
            if root.is_dir():
                names = [(p.name, p) for p in root.iterdir() if p.name.endswith(".manifest.gpg")]
            if not names:
                return None
            return max(names, key=lambda n: _set_end(n[0]))[1].read_bytes()
        from .repository.s3 import make_client

        bucket, _, prefix = url[len("boto3+s3://") :].partition("/")
        # Two small calls outside the repository's retry layer: botocore's own retries cover them.
        client = make_client(endpoint_url=self.cfg.s3_endpoint_url, region=self.cfg.s3_region, botocore_max_attempts=3)
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else ""
            )
            keys = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".manifest.gpg")]
        except Exception as err:
            raise StorageError(
                f"cannot list the offsite target s3://{bucket}/{prefix}: {err}",
                hint="check offsite.s3_endpoint_url, the bucket and credentials",
            ) from None
        if not keys:
            return None
        newest = max(keys, key=lambda k: _set_end(k.rsplit("/", 1)[-1]))
        return client.get_object(Bucket=bucket, Key=newest)["Body"].read()

    def check_passphrase(self) -> bool:
        """False when there is nothing to check against; raises WrongKeyError on a mismatch."""
        if not self.cfg.passphrase_file:
            return False
        manifest = self.newest_remote_manifest()
        if manifest is None:
            return False
        env = self.env(decrypting=True)
        passphrase = env.pop("PASSPHRASE")  # gpg reads it from fd 0 only, never its environment
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as d:
            path = Path(d) / "m.gpg"
            path.write_bytes(manifest)
            res = capture(
                [
                    "gpg",
                    "--batch",
                    "--no-tty",
                    "--pinentry-mode=loopback",
                    "--passphrase-fd=0",
                    "--decrypt",
                    "--output=/dev/null",
                    str(path),
                ],
                what="checking the offsite passphrase",
                input=passphrase + "\n",
                env=env,
                timeout=120,
            )
        if res.returncode != 0:
            raise WrongKeyError(
                "the offsite passphrase does not decrypt the existing offsite chain",
                stderr_tail=tail(res.stderr, 4),
                hint="offsite.passphrase_file must hold the passphrase the chain was written with; nothing "
                "was uploaded",
            )
        return True


def _set_end(name: str) -> str:
    times = re.findall(r"\d{8}T\d{6}Z", name)
    return times[-1] if times else ""


# -- mirroring an S3 primary -------------------------------------------------------------------
def mirror(repo: Repository, dest: Path) -> dict[str, int]:
    """Make `dest` an exact copy of the repository's committed objects (by key and size)."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {o.key: o for o in repo.list("")}
    fetched = removed = 0
    for key, info in wanted.items():
        path = dest / key
        if path.exists() and path.stat().st_size == info.size:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.mirror-{uuid.uuid4().hex[:6]}")
        with open(tmp, "wb") as f:
            repo.read_into(key, f.write)
        os.replace(tmp, path)
        fetched += 1
    for path in sorted(dest.rglob("*"), reverse=True):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in wanted:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return {"objects": len(wanted), "fetched": fetched, "removed": removed}


# -- what the CLI and Dagster call ---------------------------------------------------------------
def _offsite(cfg: Config) -> OffsiteConfig:
    if cfg.offsite is None:
        raise ConfigError("no offsite: section in the configuration", hint="see docs/offsite.md")
    return cfg.offsite


def source_dir(session: Session) -> tuple[Path, dict[str, int] | None]:
    """The directory duplicity copies: the repository's own, or a mirror made through the storage interface."""
    off = _offsite(session.config)
    local = session.repo.local_directory()
    if local is not None:
        return local, None
    if off.mirror_dir is None:
        raise ConfigError("the repository is on S3: set offsite.mirror_dir (a local directory duplicity reads)")
    return off.mirror_dir, mirror(session.repo, off.mirror_dir)


def offsite_backup(session: Session) -> dict[str, Any]:
    cfg = session.config
    off = _offsite(cfg)
    dup = Duplicity(off, cfg.work_dir / "duplicity")
    t0 = time.monotonic()
    with host_lock(cfg.work_dir, "_offsite", "offsite copy"):
        for stale in (cfg.work_dir / "duplicity").glob("duplicity-*-tempdir"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
        source, mirrored = source_dir(session)
        checked = dup.check_passphrase()
        dup.backup(source)
        t_backup = time.monotonic() - t0
        try:
            verify = {"passed": True, "message": dup.verify(source)}
        except BackupPipelinesError as err:  # recorded, so the asset check can fail on it
            verify = {"passed": False, "message": err.message, "detail": err.stderr_tail}
        if verify["passed"]:
            dup.remove_old()  # never prune the offsite copy while its newest chain is unproven
        status = dup.status()
    newest = status["chains"][-1]["sets"][-1] if status["chains"] and status["chains"][-1]["sets"] else None
    report = {
        "finished_at": datetime.now(UTC).isoformat(),
        "source": str(source),
        "target": off.target_url,
        "mirror": mirrored,
        "passphrase_checked": checked,
        "newest_set": newest,
        "backup_seconds": round(t_backup, 3),
        "seconds": round(time.monotonic() - t0, 3),
        "verify": verify,
        "status": status,
        "source_bytes": sum(p.stat().st_size for p in source.rglob("*") if p.is_file()),
    }
    session.repo.put_bytes(
        f"offsite/reports/{report['finished_at'][:19].replace(':', '')}Z.json", session.catalog.seal_json(report)
    )
    return report


def offsite_status(session: Session) -> dict[str, Any]:
    cfg = session.config
    return Duplicity(_offsite(cfg), cfg.work_dir / "duplicity").status()


def offsite_restore(cfg: Config, dest: Path, at: str | None = None) -> dict[str, Any]:
    """Fetch the offsite copy of the repository into `dest` (absent or empty): a file repository."""
    off = _offsite(cfg)
    dest = dest.absolute()
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise RefusedError(f"{dest} exists and is not empty; refusing to restore the offsite copy into it")
        dest.rmdir()
    t0 = time.monotonic()
    Duplicity(off, cfg.work_dir / "duplicity").restore(dest, at)
    if not (dest / "hosts").is_dir():
        raise NotFoundError(
            f"the offsite copy restored into {dest} holds no hosts/ directory",
            hint="check offsite.target_url points at a backup-pipelines repository copy",
        )
    hosts = sorted(p.name for p in (dest / "hosts").iterdir() if p.is_dir())
    return {
        "restored_to": str(dest),
        "repository_url": f"file://{dest}",
        "hosts": hosts,
        "seconds": round(time.monotonic() - t0, 3),
        "time": at,
    }


def latest_offsite_report(session: Session) -> dict[str, Any] | None:
    keys = sorted(i.key for i in session.repo.list("offsite/reports/"))
    if not keys:
        return None
    return session.catalog.open_json(session.repo.get_bytes(keys[-1]), keys[-1])
