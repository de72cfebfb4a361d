"""Storage drivers behind one interface: `file://` (the default) and `s3://`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import ObjectInfo, ObjectWriter, Repository
from .file import FileRepository

if TYPE_CHECKING:  # the config model pulls in pydantic; `stream put/get` start without it
    from ..config import RepositoryConfig

__all__ = ["FileRepository", "ObjectInfo", "ObjectWriter", "Repository", "open_repository"]


def open_repository(cfg: RepositoryConfig) -> Repository:
    if cfg.url.startswith("file://"):
        try:
            return FileRepository(cfg.url)
        except ValueError:
            raise ConfigError(
                f"repository URL {cfg.url!r} is not a local file URL",
                hint="write it as file:///absolute/path (three slashes; no host name)",
            ) from None
    if not cfg.url.startswith("s3://"):
        raise ConfigError(
            f"repository URL {cfg.url!r} has an unsupported scheme",
            hint="use file:///path/to/repository or s3://bucket/prefix",
        )
    from .s3 import RetryPolicy, S3Repository

    return S3Repository(
        cfg.url,
        endpoint_url=cfg.s3.endpoint_url,
        region=cfg.s3.region,
        part_size=cfg.s3.part_size,
        concurrency=cfg.s3.concurrency,
        retry=RetryPolicy(max_attempts=cfg.s3.max_attempts),
    )
