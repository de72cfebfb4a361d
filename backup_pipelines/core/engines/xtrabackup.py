"""Percona XtraBackup 8: the same flag family; prepare needs --apply-log-only on all but the last step."""

from __future__ import annotations

from pathlib import Path

from .base import PhysicalEngine


class XtrabackupEngine(PhysicalEngine):
    name = "xtrabackup"
    default_binary = "xtrabackup"
    default_stream_binary = "xbstream"
    package_hint = "Percona's percona-xtrabackup-80 package"

    def backup_command(self, *, defaults_file: Path, lsn_dir: Path, incremental_lsn: int | None) -> list[str]:
        cmd = [
            self.binary,
            f"--defaults-extra-file={defaults_file}",
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
        # Uncommitted transactions must not be rolled back until the last incremental is
        # merged, so every step but the last keeps --apply-log-only.
        steps = [None, *incremental_dirs]
        cmds = []
        for i, inc in enumerate(steps):
            cmd = [self.binary, "--no-defaults", "--prepare", f"--use-memory={self.host.prepare_memory}"]
            if i < len(steps) - 1:
                cmd.append("--apply-log-only")
            cmd.append(f"--target-dir={base_dir}")
            if inc is not None:
                cmd.append(f"--incremental-dir={inc}")
            cmds.append(cmd)
        return cmds

    def copy_back_command(self, prepared_dir: Path, datadir: Path, scratch_dir: Path) -> list[str]:
        return [
            self.binary,
            "--no-defaults",
            "--move-back",
            f"--target-dir={prepared_dir}",
            f"--datadir={datadir}",
        ]
