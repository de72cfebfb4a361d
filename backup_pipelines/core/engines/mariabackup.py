"""MariaDB's mariabackup (a fork of XtraBackup 2.4), tested here for real."""

from __future__ import annotations

from pathlib import Path

from .base import PhysicalEngine


class MariabackupEngine(PhysicalEngine):
    name = "mariabackup"
    default_binary = "mariabackup"
    default_stream_binary = "mbstream"
    package_hint = "apt install mariadb-backup"

    def backup_command(self, *, defaults_file: Path, lsn_dir: Path, incremental_lsn: int | None) -> list[str]:
        cmd = [
            self.binary,
            f"--defaults-extra-file={defaults_file}",  # must come first
            "--backup",
            "--stream=xbstream",
            f"--datadir={self.host.datadir}",
            f"--target-dir={lsn_dir}",
            f"--extra-lsndir={lsn_dir}",
            *self.connection_args(),
        ]
        if self.host.parallel > 1:
            cmd.append(f"--parallel={self.host.parallel}")
        if incremental_lsn is not None:
            cmd.append(f"--incremental-lsn={incremental_lsn}")
        return cmd + list(self.host.extra_backup_args)

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

    def copy_back_command(self, prepared_dir: Path, datadir: Path, scratch_dir: Path) -> list[str]:
        return [
            self.binary,
            "--no-defaults",
            "--move-back",
            f"--target-dir={prepared_dir}",
            f"--datadir={datadir}",
        ]
