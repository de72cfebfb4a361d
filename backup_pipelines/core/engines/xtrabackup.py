"""Percona XtraBackup 8: the same flag family; prepare needs --apply-log-only on all but the last step."""

from __future__ import annotations

from pathlib import Path

from .base import PhysicalEngine


class XtrabackupEngine(PhysicalEngine):
    name = "xtrabackup"
    default_binary = "xtrabackup"
    default_stream_binary = "xbstream"
    package_hint = "Percona's percona-xtrabackup-80 package"

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
