"""MariaDB's mariabackup (a fork of XtraBackup 2.4), tested here for real."""

from __future__ import annotations

from pathlib import Path

from .base import PhysicalEngine


class MariabackupEngine(PhysicalEngine):
    name = "mariabackup"
    default_binary = "mariabackup"
    default_stream_binary = "mbstream"
    package_hint = "apt install mariadb-backup"

    def prepare_commands(self, base_dir: Path, incremental_dirs: list[Path]) -> list[list[str]]:
        # mariabackup >= 10.2 needs no --apply-log-only: each step is a plain --prepare.
        cmds = [
            [
                self.binary,
                "--no-defaults",
                "--prepare",
                f"--use-memory={self.host.prepare_memory}",
                f"--target-dir={base_dir}",
            ]
        ]
        for inc in incremental_dirs:
            cmds.append(
                [
                    self.binary,
                    "--no-defaults",
                    "--prepare",
                    f"--use-memory={self.host.prepare_memory}",
                    f"--target-dir={base_dir}",
                    f"--incremental-dir={inc}",
                ]
            )
        return cmds
