"""Legacy innobackupex (XtraBackup 2.x wrapper), as GOV.UK ran it.

Differences from xtrabackup: the backup's scratch directory is positional,
incrementals need --incremental as well as the LSN, prepare is --apply-log
(--redo-only on every step but the last), and copy-back reads the datadir from
an option file rather than a flag.
"""

from __future__ import annotations

from pathlib import Path

from .base import PhysicalEngine


class InnobackupexEngine(PhysicalEngine):
    name = "innobackupex"
    default_binary = "innobackupex"
    default_stream_binary = "xbstream"
    package_hint = "Percona's percona-xtrabackup (2.4) package"

    def backup_command(self, *, defaults_file: Path, lsn_dir: Path, incremental_lsn: int | None) -> list[str]:
        cmd = [
            self.binary,
            f"--defaults-extra-file={defaults_file}",
            "--stream=xbstream",
            f"--extra-lsndir={lsn_dir}",
            *self.connection_args(),
        ]
        if self.host.parallel > 1:
            cmd.append(f"--parallel={self.host.parallel}")
        cmd += self.throttle_args()
        if incremental_lsn is not None:
            cmd += ["--incremental", f"--incremental-lsn={incremental_lsn}"]
        return cmd + list(self.host.extra_backup_args) + [str(lsn_dir)]

    def prepare_commands(self, base_dir: Path, incremental_dirs: list[Path]) -> list[list[str]]:
        cmds = [
            [
                self.binary,
                "--no-defaults",
                "--apply-log",
                f"--use-memory={self.host.prepare_memory}",
                "--redo-only",
                str(base_dir),
            ]
        ]
        for i, inc in enumerate(incremental_dirs):
            cmd = [self.binary, "--no-defaults", "--apply-log", f"--use-memory={self.host.prepare_memory}"]
            if i < len(incremental_dirs) - 1:
                cmd.append("--redo-only")
            cmds.append([*cmd, str(base_dir), f"--incremental-dir={inc}"])
        # The final pass rolls back uncommitted transactions and creates fresh redo logs.
        cmds.append(
            [self.binary, "--no-defaults", "--apply-log", f"--use-memory={self.host.prepare_memory}", str(base_dir)]
        )
        return cmds

    def copy_back_command(self, prepared_dir: Path, datadir: Path, scratch_dir: Path) -> list[str]:
        cnf = scratch_dir / "copy-back.cnf"
        cnf.write_text(f"[mysqld]\ndatadir={datadir}\n")
        return [self.binary, f"--defaults-file={cnf}", "--move-back", str(prepared_dir)]
