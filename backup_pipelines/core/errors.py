"""Operator-facing errors and the exit codes the CLI maps them to.

Every error carries enough context (host, backup id, object key, command and its
stderr tail) to act on without reading a traceback, and a hint saying what to do.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: an unexpected exception
    USAGE = 2  # bad arguments or configuration
    NOT_FOUND = 3  # no such host, backup, parent or object
    INTEGRITY = 4  # checksum mismatch, wrong key, tampered object, broken chain
    TOOL_FAILED = 5  # the backup tool (mariabackup, xtrabackup, mysqldump, duplicity...) failed
    STORAGE = 6  # the repository could not be read or written
    VERIFY_FAILED = 7  # a restore verification found a problem
    REFUSED = 8  # a safety check refused the operation (non-empty target, non-staging host)
    LOCKED = 9  # another run holds the host's lock
    TRANSPORT = 10  # the worker host could not be reached


# What each exit code means to an operator; `--help` and docs/exit-codes.md print this table.
EXIT_CODE_MEANINGS: dict[int, str] = {
    0: "success",
    ExitCode.INTERNAL: "a bug (an unexpected exception): please report it with the -v traceback",
    ExitCode.USAGE: "bad arguments, configuration, paths or key files: the message names the input",
    ExitCode.NOT_FOUND: "no such host, backup, parent or object",
    ExitCode.INTEGRITY: "checksum mismatch, wrong key, tampered object or broken chain",
    ExitCode.TOOL_FAILED: "an external tool failed or passed its deadline (mariabackup, mysqldump, duplicity, ...)",
    ExitCode.STORAGE: "the repository could not be read or written (S3 unreachable, disk full, ...)",
    ExitCode.VERIFY_FAILED: "a restore verification found a problem",
    ExitCode.REFUSED: "a safety check refused the operation (non-empty target, non-staging host)",
    ExitCode.LOCKED: "another run holds the host's lock",
    ExitCode.TRANSPORT: "the worker host could not be reached, or its command passed its deadline",
    130: "interrupted (Ctrl-C)",
    141: "stdout was closed (a broken pipe)",
    143: "terminated (SIGTERM); running tools were stopped",
}


def exit_code_table() -> str:
    return "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODE_MEANINGS.items())


class BackupPipelinesError(Exception):
    """Base class: a one-paragraph message plus optional context fields."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        backup_id: str | None = None,
        key: str | None = None,
        command: str | None = None,
        stderr_tail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.backup_id = backup_id
        self.key = key
        self.command = command
        self.stderr_tail = stderr_tail
        self.hint = hint

    def context(self) -> dict[str, str]:
        fields = {
            "host": self.host,
            "backup_id": self.backup_id,
            "object": self.key,
            "command": self.command,
        }
        return {k: v for k, v in fields.items() if v}

    def render(self) -> str:
        """The paragraph the CLI prints on stderr."""
        parts = [self.message.rstrip(".") + "."]
        ctx = self.context()
        if ctx:
            parts.append("(" + ", ".join(f"{k}: {v}" for k, v in ctx.items()) + ")")
        text = " ".join(parts)
        if self.stderr_tail:
            text += "\n  stderr tail:\n" + "\n".join("    " + line for line in self.stderr_tail.splitlines())
        if self.hint:
            text += "\n  what to do: " + self.hint
        return text

    def __str__(self) -> str:
        return self.render()


class ConfigError(BackupPipelinesError):
    exit_code = ExitCode.USAGE


class NotFoundError(BackupPipelinesError):
    exit_code = ExitCode.NOT_FOUND


class IntegrityError(BackupPipelinesError):
    exit_code = ExitCode.INTEGRITY


class WrongKeyError(IntegrityError):
    """Decryption failed because the key is not the one the object was written with."""


class ChainError(IntegrityError):
    """A backup chain is missing a link or its LSNs do not line up."""


class ToolError(BackupPipelinesError):
    exit_code = ExitCode.TOOL_FAILED


class StorageError(BackupPipelinesError):
    exit_code = ExitCode.STORAGE


class VerificationFailed(BackupPipelinesError):
    exit_code = ExitCode.VERIFY_FAILED


class RefusedError(BackupPipelinesError):
    exit_code = ExitCode.REFUSED


class LockedError(BackupPipelinesError):
    exit_code = ExitCode.LOCKED


class TransportError(BackupPipelinesError):
    exit_code = ExitCode.TRANSPORT


def tail(text: str | bytes, lines: int = 12) -> str:
    """Last lines of a tool's stderr, decoded leniently."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])
