"""Every kind of input an operator can get wrong, through the CLI's main(): a documented exit code, a
message naming the input and what to do, and never a traceback or an "internal error".

The table is docs/exit-codes.md's list of bad inputs; keep the two together.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from backup_pipelines.cli import main
from backup_pipelines.core.crypto import generate_key_text
from backup_pipelines.core.mysqld import free_port

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    code: int
    says: str  # a piece of the message: names the input or what to do
    stdin: bytes = b""
    config_env: bool = True  # whether BACKUP_PIPELINES_CONFIG points at the good config


def _secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, s3_server) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad-inputs")
    key = _secret(d / "repo.key", generate_key_text())
    other_key = _secret(d / "other.key", generate_key_text())
    pw = _secret(d / "backup.password", "pw\n")
    host = {"datadir": str(d / "datadir"), "socket": str(d / "no-server.sock"), "password_file": str(pw)}
    good = {
        "repository": {"url": f"file://{d / 'repository'}", "encryption_key_file": str(key)},
        "hosts": {"db1": host},
        "work_dir": str(d / "work"),
    }

    def config(name: str, doc: object) -> str:
        (d / name).write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        return str(d / name)

    (d / "a-file").write_text("not a directory\n")
    (d / "full-target").mkdir()
    (d / "full-target" / "ibdata1").write_text("x")
    s3_down = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region": "us-east-1", "max_attempts": 1}
    out = {
        "dir": str(d),
        "good": config("good.yaml", good),
        "bad_yaml": config("bad.yaml", "repository: [unclosed\n"),
        "unknown_key": config("unknown.yaml", {**good, "retention_days": 7}),
        "bad_type": config("types.yaml", {**good, "hosts": {"db1": {**host, "parallel": "lots"}}}),
        "not_mapping": config("list.yaml", "- a\n- b\n"),
        "no_scheme": config("scheme.yaml", {**good, "repository": {"url": "/var/backups"}}),
        "inline_hook": config("hook.yaml", {**good, "notifications": {"webhook_url": "https://hooks.example/T/B/X"}}),
        "key_missing": config(
            "nokey.yaml", {**good, "repository": {**good["repository"], "encryption_key_file": str(d / "absent.key")}}
        ),
        "key_garbage": config(
            "garbagekey.yaml",
            {
                **good,
                "repository": {**good["repository"], "encryption_key_file": str(_secret(d / "garbage.key", "hello\n"))},
            },
        ),
        "key_short": config(
            "shortkey.yaml",
            {
                **good,
                "repository": {
                    **good["repository"],
                    "encryption_key_file": str(_secret(d / "short.key", "bpkey1:AAAA\n")),
                },
            },
        ),
        "key_group": config(
            "groupkey.yaml",
            {
                **good,
                "repository": {
                    **good["repository"],
                    "encryption_key_file": str(_secret(d / "group.key", generate_key_text(), 0o640)),
                },
            },
        ),
        "pw_world": config(
            "worldpw.yaml",
            {**good, "hosts": {"db1": {**host, "password_file": str(_secret(d / "world.password", "pw\n", 0o644))}}},
        ),
        "work_not_dir": config("workfile.yaml", {**good, "work_dir": str(d / "a-file" / "work")}),
        "s3_down": config(
            "s3down.yaml", {**good, "repository": {**good["repository"], "url": "s3://bucket/prefix", "s3": s3_down}}
        ),
        "s3_bad_endpoint": config(
            "s3endpoint.yaml",
            {
                **good,
                "repository": {**good["repository"], "url": "s3://bucket/p", "s3": {"endpoint_url": "localhost:9000"}},
            },
        ),
        "key": str(key),
        "other_key": str(other_key),
        "endpoint": s3_server.endpoint_url,
    }
    # an object encrypted with one key, for reading with the other
    s3_server.client().create_bucket(Bucket="bad-inputs")
    put = _cli(
        [
            "stream",
            "put",
            "s3://bad-inputs/secret",
            "--endpoint-url",
            out["endpoint"],
            "--key-file",
            str(key),
            "--encrypt",
        ],
        b"payload" * 100,
        {},
    )
    assert put.returncode == 0, put.stderr
    return out


def _cli(argv: list[str], stdin: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backup_pipelines.cli", *argv],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def cases(f: dict[str, str]) -> list[Case]:
    d, ep = f["dir"], f["endpoint"]
    c = ["-c", f["good"]]
    return [
        # points in time, ids, hosts
        Case(
            "restore --at yesterday",
            [*c, "restore", "--host", "db1", "--target-datadir", f"{d}/r", "--at", "yesterday"],
            2,
            "--at 'yesterday' is not a time",
        ),
        Case(
            "verify --at 'not a time'", [*c, "verify", "--host", "db1", "--at", "not a time"], 2, "(no zone means UTC)"
        ),
        Case("verify -v --at bad", ["-v", *c, "verify", "--host", "db1", "--at", "2026-13-45"], 2, "is not a time"),
        Case(
            "restore --backup-id ../../etc",
            [*c, "restore", "--host", "db1", "--target-datadir", f"{d}/r", "--backup-id", "../../etc"],
            2,
            "backup id '../../etc' is not valid",
        ),
        Case(
            "restore unknown backup id",
            [*c, "restore", "--host", "db1", "--target-datadir", f"{d}/r", "--backup-id", "20261120T040000000Z-full"],
            3,
            "not in the catalog",
        ),
        Case("list --host nope", [*c, "list", "--host", "nope"], 2, "host 'nope' is not in the configuration"),
        Case("list --host ../x", [*c, "list", "--host", "../x"], 2, "host '../x'"),
        Case(
            "backup incremental, nothing to extend",
            [*c, "backup", "incremental", "--host", "db1"],
            3,
            "backup full --host db1",
        ),
        Case(
            "dump --for-date someday",
            [*c, "backup", "dump", "--host", "db1", "--for-date", "someday"],
            2,
            "--for-date 'someday' is not a date",
        ),
        Case(
            "cleanup --grace-hours -1",
            [*c, "cleanup", "--host", "db1", "--grace-hours", "-1"],
            2,
            "must be zero or more",
        ),
        Case("unknown command", [*c, "restor"], 2, "invalid choice: 'restor'"),
        Case("missing --host", [*c, "list"], 2, "--host"),
        Case(
            "staging target not configured",
            [*c, "staging-restore", "--target", "nope", "--host", "db1"],
            2,
            "staging target 'nope' is not configured",
        ),
        Case("offsite without an offsite: section", [*c, "offsite", "status"], 2, "no offsite: section"),
        Case("offsite restore without --to", [*c, "offsite", "restore"], 2, "--to DIR"),
        # paths
        Case(
            "restore into a non-empty directory",
            [*c, "restore", "--host", "db1", "--target-datadir", f"{d}/full-target"],
            8,
            "is not empty",
        ),
        Case(
            "restore onto a file",
            [*c, "restore", "--host", "db1", "--target-datadir", f"{d}/a-file"],
            8,
            "is not a directory",
        ),
        Case("work_dir under a file", ["-c", f["work_not_dir"], "backup", "full", "--host", "db1"], 2, "cannot use"),
        # configuration files
        Case(
            "no config at all",
            ["list", "--host", "db1"],
            2,
            "pass -c/--config PATH or set BACKUP_PIPELINES_CONFIG",
            config_env=False,
        ),
        Case(
            "config file missing",
            ["-c", f"{d}/absent.yaml", "list", "--host", "db1"],
            2,
            "cannot read configuration file",
        ),
        Case("config is a directory", ["-c", d, "list", "--host", "db1"], 2, "Is a directory"),
        Case("config invalid YAML", ["-c", f["bad_yaml"], "list", "--host", "db1"], 2, "is not valid YAML"),
        Case("config not a mapping", ["-c", f["not_mapping"], "list", "--host", "db1"], 2, "must be a YAML mapping"),
        Case("config unknown key", ["-c", f["unknown_key"], "list", "--host", "db1"], 2, "retention_days: unknown key"),
        Case("config bad type", ["-c", f["bad_type"], "list", "--host", "db1"], 2, "hosts.db1.parallel"),
        Case(
            "config repository without scheme",
            ["-c", f["no_scheme"], "list", "--host", "db1"],
            2,
            "must start with file:// or s3://",
        ),
        Case("config inline webhook_url", ["-c", f["inline_hook"], "list", "--host", "db1"], 2, "webhook_url_file"),
        # URLs
        Case(
            "--repository ftp://x",
            [*c, "--repository", "ftp://x", "list", "--host", "db1"],
            2,
            "--repository 'ftp://x': must start with file:// or s3://",
        ),
        Case(
            "--repository file://host/x",
            [*c, "--repository", "file://host/x", "list", "--host", "db1"],
            2,
            "three slashes",
        ),
        Case("stream get notaurl", ["stream", "get", "notaurl"], 2, "'notaurl' is not an S3 URL", config_env=False),
        Case("stream get s3://bucket", ["stream", "get", "s3://bucket"], 2, "names no object key", config_env=False),
        Case(
            "stream get --endpoint-url notaurl",
            ["stream", "get", "s3://b/k", "--endpoint-url", "notaurl"],
            2,
            "'notaurl' is not an S3 endpoint URL",
            config_env=False,
        ),
        Case(
            "config endpoint without scheme",
            ["-c", f["s3_bad_endpoint"], "list", "--host", "db1"],
            2,
            "is not an S3 endpoint URL",
        ),
        Case(
            "stream put --part-size 1",
            ["stream", "put", "s3://b/k", "--endpoint-url", ep, "--part-size", "1"],
            2,
            "5 MiB minimum",
            config_env=False,
        ),
        Case(
            "stream put --concurrency 0",
            ["stream", "put", "s3://b/k", "--endpoint-url", ep, "--concurrency", "0"],
            2,
            "--concurrency 0",
            config_env=False,
        ),
        Case(
            "stream get of a missing object",
            ["stream", "get", "s3://bad-inputs/absent", "--endpoint-url", ep],
            3,
            "absent",
            config_env=False,
        ),
        # keys and secret files
        Case(
            "key file missing", ["-c", f["key_missing"], "list", "--host", "db1"], 2, "cannot read encryption key file"
        ),
        Case("key file not a key", ["-c", f["key_garbage"], "list", "--host", "db1"], 2, "keygen"),
        Case("key file wrong size", ["-c", f["key_short"], "list", "--host", "db1"], 2, "short.key"),
        Case("key file group-readable", ["-c", f["key_group"], "list", "--host", "db1"], 2, "is group-readable"),
        Case(
            "password file world-readable",
            ["-c", f["pw_world"], "backup", "full", "--host", "db1"],
            2,
            "is world-readable",
        ),
        Case(
            "stream --encrypt without a key",
            ["stream", "get", "s3://b/k", "--encrypt"],
            2,
            "--key-file",
            config_env=False,
        ),
        Case(
            "wrong key",
            [
                "stream",
                "get",
                "s3://bad-inputs/secret",
                "--endpoint-url",
                ep,
                "--key-file",
                f["other_key"],
                "--encrypt",
            ],
            4,
            "key",
            config_env=False,
        ),
        # servers
        Case(
            "S3 endpoint unreachable", ["-c", f["s3_down"], "list", "--host", "db1"], 6, "cannot reach the S3 endpoint"
        ),
        Case("database server unreachable", [*c, "backup", "full", "--host", "db1"], 5, "no-server.sock"),
    ]


def _in_process(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """The CLI's own main(), as the console script calls it, with stderr captured: a process start
    costs ~0.5 s of CPU (imports), so the table runs here and `_ENTRY_POINT_CASES` re-run as processes."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = io.StringIO()
    out = io.TextIOWrapper(io.BytesIO())  # with a .buffer, as `stream get` writes bytes
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as done:  # argparse's usage errors
            code = done.code if isinstance(done.code, int) else 2
        except BaseException as exc:  # would be a traceback for the operator
            code, err = -1, io.StringIO(f"Traceback (raised out of main): {exc!r}")
    return code, err.getvalue()


# A few cases also run as real processes (`python -m backup_pipelines.cli`): the entry point behaves the same.
_ENTRY_POINT_CASES = ("restore --at yesterday", "config unknown key", "database server unreachable", "unknown command")


def test_bad_inputs_get_a_documented_code_and_a_clear_message(files, monkeypatch):
    docs = (Path(__file__).parents[2] / "docs" / "exit-codes.md").read_text()
    failures = []
    for case in cases(files):
        env = {"BACKUP_PIPELINES_CONFIG": files["good"] if case.config_env else ""}
        runs = [_in_process(case.argv, env, monkeypatch)]
        if case.name in _ENTRY_POINT_CASES:
            res = _cli(case.argv, case.stdin, env)
            runs.append((res.returncode, res.stderr))
        for code, err in runs:
            problems = []
            if code != case.code:
                problems.append(f"exit {code}, wanted {case.code}")
            if case.says not in err:
                problems.append(f"message lacks {case.says!r}")
            for bad in ("Traceback", "internal error", "re-run with -v"):
                if bad in err:
                    problems.append(f"stderr shows {bad!r}")
            if "what to do" not in err and "usage:" not in err:
                problems.append("no 'what to do'")
            if f"| {case.name} | {case.code} |" not in docs:
                problems.append("not listed in docs/exit-codes.md with this code")
            if problems:
                failures.append(f"{case.name}: {'; '.join(problems)}\n    stderr: {err.strip()[-600:]}")
    assert not failures, "\n".join(failures)
    assert all(name in {c.name for c in cases(files)} for name in _ENTRY_POINT_CASES)
    # the failed backups (server unreachable, world-readable password) left no empty directories behind
    repo = Path(files["dir"]) / "repository"
    assert not repo.exists() or [p for p in repo.rglob("*") if p.is_dir()] == []
    assert [p.name for p in (Path(files["dir"]) / "work").iterdir()] == ["locks"]  # no sandbox, scratch or credentials
