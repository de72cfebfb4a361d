"""Running a worker command from an op: live logs, typed failures, bounded retries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dagster import Backoff, Failure, Jitter, OpExecutionContext, RetryPolicy

from ..core.config import Config
from ..core.errors import BackupPipelinesError, LockedError, StorageError, ToolError, TransportError
from ..core.transport import Worker
from .keys import AS_OF_TAG, SCHEDULED_TAG
from .threaded_executor import current_cancel

# Worth another attempt: the network, the object store, a busy host, a tool that died.
TRANSIENT = (StorageError, TransportError, LockedError, ToolError)


def retry_policy(cfg: Config) -> RetryPolicy:
    o = cfg.orchestration
    return RetryPolicy(
        max_retries=o.retry_max,
        delay=o.retry_delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


def run_json(
    context: OpExecutionContext,
    worker: Worker,
    args: list[str],
    *,
    timeout: float,
    ok_codes: tuple[int, ...] = (0,),
) -> Any:
    """Run `backup-pipelines <args>` on the worker; failures become a Failure naming what to do."""
    try:
        return worker.run_json(
            args,
            timeout=timeout,
            on_stderr_line=lambda line: context.log.info(line),
            ok_codes=ok_codes,
            cancel=current_cancel(),
        )
    except BackupPipelinesError as err:
        retryable = isinstance(err, TRANSIENT)
        context.log.error(err.render())
        raise Failure(
            description=err.render(),
            metadata={
                "host": worker.host,
                "error": type(err).__name__,
                "exit_code": int(err.exit_code),
                "retryable": retryable,
            },
            allow_retries=retryable,
        ) from None


def _parse(value: str) -> datetime | None:
    try:
        ts = float(value)
        return datetime.fromtimestamp(ts, UTC)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def refuse_past_dated(context: OpExecutionContext, cfg: Config, now: datetime | None = None) -> None:
    """A backup captures *now*: refuse a run meant for an earlier time rather than mislabel it."""
    now = now or datetime.now(UTC)
    limit = cfg.orchestration.max_schedule_lag_minutes
    for tag in (AS_OF_TAG, SCHEDULED_TAG):
        value = context.run.tags.get(tag)
        if not value:
            continue
        when = _parse(value)
        if when is None:
            raise Failure(description=f"run tag {tag}={value!r} is not a time", allow_retries=False)
        lag = (now - when).total_seconds() / 60
        if lag > limit:
            raise Failure(
                description=(
                    f"refusing to take a backup for {when.isoformat()}: backups capture the database as it "
                    f"is now, and this run is {lag:.0f} minutes late (limit {limit:.0f}). A backup taken now "
                    "would be labelled with a time it does not represent. Launch it again without a "
                    f"{tag} tag (or wait for the next scheduled tick) to take a backup of the present."
                ),
                metadata={"requested_for": when.isoformat(), "minutes_late": round(lag, 1)},
                allow_retries=False,
            )
