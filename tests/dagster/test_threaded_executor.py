"""The threaded executor, through real runs (`execute_job`, not `execute_in_process`, which would
swap in Dagster's in-process executor) on a real sqlite instance: steps overlap, retries, pools,
failures and per-partition materializations behave as they do under Dagster's own executors."""

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DynamicOut,
    DynamicOutput,
    Failure,
    OpExecutionContext,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    execute_job,
    job,
    op,
    reconstructable,
)
from dagster import Definitions as _Definitions

from backup_pipelines.core.config import LocalTransport
from backup_pipelines.core.errors import TransportError
from backup_pipelines.core.transport import LocalWorker
from backup_pipelines.defs.threaded_executor import current_cancel, threaded_executor

pytestmark = pytest.mark.dagster

HOSTS = [f"db{i}" for i in range(6)]
HOST_ASSET = AssetKey(["toy", "backup"])
_attempts: dict[str, int] = defaultdict(int)
_lock = threading.Lock()


@op(out=DynamicOut(str), config_schema={"hosts": [str]})
def fan_out(context: OpExecutionContext):
    for h in context.op_config["hosts"]:
        yield DynamicOutput(h, mapping_key=h)


@op(retry_policy=RetryPolicy(max_retries=2, delay=0.2))
def back_up(context: OpExecutionContext, host: str) -> str:
    with _lock:
        _attempts[f"{context.run_id}|{host}"] += 1
        attempt = _attempts[f"{context.run_id}|{host}"]
    context.log.info(f"span {host} start {time.time()}")
    time.sleep(1.0)
    if host == "db1" and attempt == 1:
        raise Failure(description="db1: transient", allow_retries=True)
    if host == "db5":
        raise Failure(description="db5: the server is gone", allow_retries=False)
    context.log_event(AssetMaterialization(HOST_ASSET, partition=host, metadata={"attempt": attempt}))
    context.log.info(f"span {host} end {time.time()}")
    return host


@op
def summary(hosts: list[str]) -> int:
    return len(hosts)


@job(executor_def=threaded_executor)
def toy_batch():
    summary(fan_out().map(back_up).collect())


@op(pool="toy_pool")
def pooled(context: OpExecutionContext, host: str) -> None:
    context.log.info(f"span {host} start {time.time()}")
    time.sleep(0.6)
    context.log.info(f"span {host} end {time.time()}")


@job(executor_def=threaded_executor.configured({"max_concurrent": 6}))
def toy_pooled():
    fan_out().map(pooled)


parts = StaticPartitionsDefinition(HOSTS)


@asset(partitions_def=parts)
def toy_asset() -> None:
    time.sleep(0.1)


def toy_asset_defs() -> _Definitions:
    return _Definitions(assets=[toy_asset], jobs=[define_asset_job("toy_assets", executor_def=threaded_executor)])


def _intervals(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """host -> (start, end) of its last attempt, from the steps' own log lines."""
    marks: dict[tuple[str, str], float] = {}
    for e in instance.all_logs(run_id):
        words = (e.user_message or "").split()
        if len(words) == 4 and words[0] == "span":
            marks[(words[1], words[2])] = float(words[3])
    return {h: (marks[(h, "start")], t) for (h, what), t in marks.items() if what == "end"}


def test_steps_overlap_retry_and_fail_per_host(dagster_instance: DagsterInstance) -> None:
    config = {"ops": {"fan_out": {"config": {"hosts": HOSTS}}}, "execution": {"config": {"max_concurrent": 3}}}
    started = time.monotonic()
    with execute_job(reconstructable(toy_batch), instance=dagster_instance, run_config=config) as result:
        wall = time.monotonic() - started
        assert not result.success  # db5 failed for good
        run_id = result.run_id
    # 6 hosts x 1 s on 3 threads, plus db1's retry: two or three waves, never six
    assert wall < 5.5, wall
    events = dagster_instance.all_logs(run_id)
    by_type: dict[DagsterEventType, list[str]] = defaultdict(list)
    for e in events:
        if e.dagster_event is not None:
            by_type[e.dagster_event.event_type].append(e.step_key or "")
    assert sorted(by_type[DagsterEventType.STEP_SUCCESS]) == sorted(
        ["fan_out"] + [f"back_up[{h}]" for h in HOSTS if h != "db5"]
    )
    assert by_type[DagsterEventType.STEP_FAILURE] == ["back_up[db5]"]
    assert by_type[DagsterEventType.STEP_UP_FOR_RETRY] == ["back_up[db1]"]
    assert by_type[DagsterEventType.STEP_RESTARTED] == ["back_up[db1]"]
    assert "summary" not in by_type[DagsterEventType.STEP_START]  # its upstream failed: not executed
    # at most three at once
    spans = _intervals(dagster_instance, run_id)
    for t in {s for s, _ in spans.values()}:
        assert sum(1 for s, e in spans.values() if s <= t < e) <= 3
    # one materialization per host partition, stored by the instance with the run that made it
    records = dagster_instance.fetch_materializations(HOST_ASSET, limit=20).records
    assert sorted(r.partition_key for r in records) == sorted(h for h in HOSTS if h != "db5")
    assert {r.run_id for r in records} == {run_id}
    db1 = next(r for r in records if r.partition_key == "db1")
    assert db1.asset_materialization.metadata["attempt"].value == 2


def test_pool_limit_holds_across_threads(dagster_instance: DagsterInstance) -> None:
    dagster_instance.event_log_storage.set_concurrency_slots("toy_pool", 2)
    config = {"ops": {"fan_out": {"config": {"hosts": HOSTS}}}}
    with execute_job(reconstructable(toy_pooled), instance=dagster_instance, run_config=config) as result:
        assert result.success
        spans = _intervals(dagster_instance, result.run_id)
    assert len(spans) == len(HOSTS)
    peak = max(sum(1 for s, e in spans.values() if s <= t < e) for t, _ in spans.values())
    assert peak == 2  # the pool, not the executor's 6, is the limit; and it was reached


def test_asset_job_runs_partition_on_threaded_executor(dagster_instance: DagsterInstance) -> None:
    with execute_job(
        reconstructable(_toy_asset_job), instance=dagster_instance, tags={"dagster/partition": "db3"}
    ) as result:
        assert result.success
    records = dagster_instance.fetch_materializations(AssetKey("toy_asset"), limit=5).records
    assert [r.partition_key for r in records] == ["db3"]


def _toy_asset_job():
    return toy_asset_defs().resolve_job_def("toy_assets")


# --- stopping: a step blocked in a worker command ends when the run is interrupted ---------------

SLEEPER = f"{sys.executable} -c 'import sys, time; time.sleep(float(sys.argv[-1]))'"


def test_a_set_cancel_event_kills_the_worker_command(tmp_path: Path) -> None:
    worker = LocalWorker("db1", tmp_path / "unused.yaml", LocalTransport(command=SLEEPER))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(TransportError, match="was stopped: its run is being cancelled") as err:
        worker.run(["30"], timeout=60, cancel=cancel)
    assert time.monotonic() - started < 5
    assert err.value.host == "db1"
    # without the event the same command runs to its end
    assert worker.run(["0.2"], timeout=60, cancel=threading.Event()).returncode == 0


@op(config_schema={"command": str, "config": str})
def waits_on_worker(context: OpExecutionContext, host: str) -> None:
    spec = LocalTransport(command=context.op_config["command"])
    LocalWorker(host, context.op_config["config"], spec).run(["60"], timeout=120, cancel=current_cancel())


@job(executor_def=threaded_executor)
def toy_waiting():
    fan_out().map(waits_on_worker)


def _run_toy_waiting(home: str, command: str, config: str) -> None:  # in a child process
    import os

    os.environ["DAGSTER_HOME"] = home
    with DagsterInstance.get() as instance:
        run_config = {
            "ops": {
                "fan_out": {"config": {"hosts": ["db1", "db2", "db3"]}},
                "waits_on_worker": {"config": {"command": command, "config": config}},
            }
        }
        execute_job(reconstructable(toy_waiting), instance=instance, run_config=run_config)


def test_an_interrupted_run_stops_its_running_steps(tmp_path: Path) -> None:
    """SIGINT (what `dagster run terminate`'s signal becomes in the run worker) reaches only the
    main thread; the steps' worker commands are killed through the cancel event, the run ends."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_run_toy_waiting, args=(str(home), SLEEPER, str(tmp_path / "unused.yaml")))
    child.start()
    with DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            started = [
                e
                for r in runs
                for e in instance.all_logs(r.run_id, of_type=DagsterEventType.STEP_START)
                if (e.step_key or "").startswith("waits_on_worker[")
            ]
            if len(started) == 3:
                break
            time.sleep(0.5)
        assert len(started) == 3, "the three steps never started together"
        time.sleep(1.0)
        stopped_at = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        child.join(30)
        assert child.exitcode is not None, "the interrupted run worker did not exit"
        assert time.monotonic() - stopped_at < 20  # not the 60 s the commands would have slept
        (run,) = instance.get_runs()
        assert run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED), run.status
        failed = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        assert sorted(e.step_key for e in failed) == [f"waits_on_worker[{h}]" for h in ("db1", "db2", "db3")]
        assert all("being cancelled" in e.dagster_event.step_failure_data.error.to_string() for e in failed)
