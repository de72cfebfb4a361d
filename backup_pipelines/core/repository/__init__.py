"""Storage drivers behind one interface: `file://` (the default) and `s3://`."""

from __future__ import annotations

from ..config import RepositoryConfig
from .base import ObjectInfo, ObjectWriter, Repository
from .file import FileRepository

__all__ = ["FileRepository", "ObjectInfo", "ObjectWriter", "Repository", "open_repository"]


def open_repository(cfg: RepositoryConfig) -> Repository:
    if cfg.url.startswith("file://"):
        return FileRepository(cfg.url)
    from ..stream.retry import RetryPolicy
    from .s3 import S3Repository

    return S3Repository(
        cfg.url,
        endpoint_url=cfg.s3.endpoint_url,
        region=cfg.s3.region,
        part_size=cfg.s3.part_size,
        concurrency=cfg.s3.concurrency,
        retry=RetryPolicy(max_attempts=cfg.s3.max_attempts),
    )
