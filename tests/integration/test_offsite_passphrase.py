"""The offsite passphrase check hands gpg the passphrase by file descriptor, never in its environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from backup_pipelines.core.config import OffsiteConfig
from backup_pipelines.core.errors import WrongKeyError
from backup_pipelines.core.offsite import Duplicity

pytestmark = pytest.mark.integration


def test_offsite_passphrase_reaches_gpg_by_fd_only(tmp_path, monkeypatch):
    gpg = shutil.which("gpg")
    assert gpg, "gpg is not installed (./dev setup installs it)"
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    target = tmp_path / "offsite"
    target.mkdir()
    manifest = target / "duplicity-full.20261120T040000Z.manifest.gpg"
    subprocess.run(
        [
            *(gpg, "--homedir", str(home), "--batch", "--pinentry-mode=loopback", "--passphrase-fd=0"),
            *("--symmetric", "--output", str(manifest), "/etc/hostname"),
        ],
        input=b"right horse battery\n",
        check=True,
        capture_output=True,
    )
    # A spy in front of the real gpg records whether the passphrase is in its environment.
    spy_dir = tmp_path / "bin"
    spy_dir.mkdir()
    seen = tmp_path / "seen-env"
    (spy_dir / "gpg").write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        f"open({str(seen)!r}, 'a').write(repr('PASSPHRASE' in os.environ) + '\\n')\n"
        f"os.execv({gpg!r}, [{gpg!r}, *sys.argv[1:]])\n"
    )
    (spy_dir / "gpg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PASSPHRASE", "leaked from the caller's environment")
    pw = tmp_path / "passphrase"
    pw.write_text("right horse battery\n")
    pw.chmod(0o600)
    cfg = OffsiteConfig(
        target_url=f"file://{target}",
        passphrase_file=pw,
        gnupg_home=home,
        archive_dir=tmp_path / "archive",
    )
    dup = Duplicity(cfg, tmp_path / "work")
    assert dup.check_passphrase() is True
    pw.write_text("wrong horse\n")
    with pytest.raises(WrongKeyError, match="does not decrypt"):
        dup.check_passphrase()
    assert seen.read_text().split() == ["False", "False"]
