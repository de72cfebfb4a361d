"""PostgreSQL instance storage that keeps its connections: dagster-postgres's, with a pool.

Outside the webserver, dagster-postgres opens a new PostgreSQL connection for every query
(SQLAlchemy's NullPool). Profiled with py-spy in benchmarks/fleet.py's orchestrator, 59% of
the daemon's CPU went to connecting (TCP, start-up, SCRAM authentication) rather than to the
queries; every event a run worker stores pays the same. A known Dagster limit
(dagster-io/dagster#20325; #33936 proposes making the pool configurable).

The daemon, the code server and each run worker are one process each whose threads share one
instance, so a small pool per storage is enough: at most `pool_size + max_overflow`
connections per storage per process, checked with a ping before use (a restarted server is
survived) and recycled hourly; they close with the process. Behind PgBouncer in transaction mode, use the stock
`storage: postgres:` instead. Everything else (schema, migrations, the LISTEN/NOTIFY event
watcher) is dagster-postgres's own.
"""

from __future__ import annotations

from typing import Any

from dagster import Field, IntSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres.storage import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

DEFAULT_POOL_SIZE = 2
DEFAULT_MAX_OVERFLOW = 8
RECYCLE_SECONDS = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: custom: {module: backup_pipelines.defs.pg_storage, class: PooledPostgresStorage}`."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage._engine.dispose()
            storage._engine = create_pg_engine(
                postgres_url,
                token_provider,
                isolation_level="AUTOCOMMIT",
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                pool_recycle=RECYCLE_SECONDS,
            )

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {
            **pg_config(),
            "pool_size": Field(IntSource, is_required=False, default_value=DEFAULT_POOL_SIZE),
            "max_overflow": Field(IntSource, is_required=False, default_value=DEFAULT_MAX_OVERFLOW),
        }

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),  # type: ignore[arg-type]
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),  # type: ignore[arg-type]
            pool_size=int(config_value.get("pool_size", DEFAULT_POOL_SIZE)),
            max_overflow=int(config_value.get("max_overflow", DEFAULT_MAX_OVERFLOW)),
        )
