"""backup-pipelines: MySQL/MariaDB backups that are provably restorable."""

__version__ = "0.1.0"
