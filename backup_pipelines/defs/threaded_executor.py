"""An executor that runs a run's ready steps in threads of its one run worker.

Every op here only waits: it starts the worker CLI (over SSH, or locally) and reads its
output while the database host does the work. Such a step needs neither its own Python
process (the multiprocess default: a start-up and a code load per step, ~2 CPU-s each,
measured by benchmarks/fleet.py) nor to wait for the step before it (the in-process
executor runs steps one after another, so a batch of 50 hosts would take 50 backups' time).

Threads give a batch run one step per host (its own logs, retries, pool slot and
partition materialization in the UI) for the price of one process per run. The loop is
Dagster's own scheduling (`ActiveExecution`: dependencies, dynamic outputs, retries with
their delays, pool slots) driven as the multiprocess executor drives it; only the place a
step runs differs. Every call into `ActiveExecution` stays on the run worker's main
thread; a step's thread only produces that step's events, which are stored as they are
made (as they are in process) and handed to the main thread in order.

It leans on Dagster internals (`ActiveExecution`, `ExecuteRunWithPlanIterable`), as every
executor outside Dagster's own repository does; the version is pinned in pyproject.toml and
tests/dagster/test_threaded_executor.py runs it through real runs on a real instance.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from dagster import Field, executor
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import _trigger_hook, dagster_event_sequence_for_step
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.base import Executor
from dagster._core.executor.init import InitExecutorContext
from dagster._utils.error import serializable_error_info_from_exc_info

DEFAULT_MAX_CONCURRENT = 8
_POLL_SECONDS = 1.0  # how often a waiting main thread looks at retries, pool slots and interrupts

_current = threading.local()


def current_cancel() -> threading.Event | None:
    """The event set when the run is being stopped, for the step running on this thread.

    A step blocked in a subprocess cannot be interrupted by a signal (signals reach the main
    thread only): the worker runner watches this event and kills its process group.
    """
    return getattr(_current, "cancel", None)


@dataclass
class _Running:
    context: StepExecutionContext
    events: list[DagsterEvent] = field(default_factory=list)


_DONE = object()


def _drive(step_key: str, context: StepExecutionContext, out: queue.Queue, cancel: threading.Event) -> None:
    _current.cancel = cancel
    try:
        for event in dagster_event_sequence_for_step(context):
            out.put((step_key, event))
        out.put((step_key, _DONE))
    except BaseException as err:  # a framework error outside the step's own error handling
        out.put((step_key, err))
    finally:
        _current.cancel = None


def _threaded_plan_iterator(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan, max_concurrent: int
) -> Iterator[DagsterEvent]:
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    cancel = threading.Event()
    with ExitStack() as stack:
        concurrency = stack.enter_context(InstanceConcurrencyContext(job_context.instance, job_context.dagster_run))
        active = stack.enter_context(
            ActiveExecution(
                execution_plan,
                retry_mode=job_context.retry_mode,
                max_concurrent=max_concurrent,
                instance_concurrency_context=concurrency,
                step_dependency_config=job_context.step_dependency_config,
            )
        )
        capture = ExitStack()
        try:
            log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
            log_context = capture.enter_context(compute_log_manager.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        except Exception:
            yield DagsterEvent.engine_event(
                job_context,
                "Exception while setting up compute log capture",
                EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
            )
        events: queue.Queue = queue.Queue()
        running: dict[str, _Running] = {}
        stopping = False
        pool = stack.enter_context(ThreadPoolExecutor(max_concurrent, thread_name_prefix="dagster-step"))
        try:
            while running or (not stopping and not active.is_complete):
                if not stopping and active.check_for_interrupts():
                    stopping = True
                    active.mark_interrupted()
                    cancel.set()
                    yield DagsterEvent.engine_event(
                        job_context,
                        f"Threaded executor: run interrupted; stopping {len(running)} running step(s)",
                        EngineEventData.interrupted(list(running)),
                    )
                if not stopping:
                    steps = active.get_steps_to_execute(limit=max_concurrent - len(running))
                    yield from active.concurrency_event_iterator(job_context)
                    for step in steps:
                        context = job_context.for_step(step, active.get_known_state())
                        running[step.key] = _Running(context)
                        pool.submit(_drive, step.key, context, events, cancel)
                if not running:
                    if not stopping and not active.is_complete:
                        active.sleep_til_ready()
                    continue
                wait = _POLL_SECONDS
                while True:
                    try:
                        key, item = events.get(timeout=wait)
                    except queue.Empty:
                        break
                    wait = 0  # drain what is already there, then look for new work
                    if isinstance(item, DagsterEvent):
                        running[key].events.append(item)
                        yield item
                        active.handle_event(item)
                    elif item is _DONE:
                        done = running.pop(key)
                        active.verify_complete(job_context, key)
                        yield from active.plan_events_iterator(job_context)
                        yield from _trigger_hook(done.context, done.events)
                    else:
                        raise item
        except BaseException:
            cancel.set()  # the pool's exit waits for the steps; make them end now
            with contextlib.suppress(Exception):
                capture.close()
            raise
        try:
            capture.close()
        except Exception:
            yield DagsterEvent.engine_event(
                job_context,
                "Exception while cleaning up compute log capture",
                EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
            )
        if stopping:
            raise DagsterExecutionInterruptedError()


class ThreadedExecutor(Executor):
    def __init__(self, retries: RetryMode, max_concurrent: int = DEFAULT_MAX_CONCURRENT) -> None:
        self._retries = retries
        self.max_concurrent = max(1, max_concurrent)

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        pid = os.getpid()
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in threads of the run worker (pid: {pid}, up to {self.max_concurrent} at once)",
            event_specific_data=EngineEventData.in_process(pid, keys),
        )
        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=lambda job_context, execution_plan: _threaded_plan_iterator(
                    job_context, execution_plan, self.max_concurrent
                ),
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=plan_context.step_dependency_config,
                ),
            )
        )
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in threads of the run worker (pid: {pid})",
            event_specific_data=EngineEventData.in_process(pid, keys),
        )


@executor(
    name="threaded",
    config_schema={
        "max_concurrent": Field(
            int,
            default_value=DEFAULT_MAX_CONCURRENT,
            description="Steps of one run that run at once (each is a thread waiting on a worker command).",
        ),
        "retries": get_retries_config(),
    },
)
def threaded_executor(init_context: InitExecutorContext) -> ThreadedExecutor:
    """Run ready steps concurrently in threads of the run worker; see the module docstring."""
    config = init_context.executor_config
    return ThreadedExecutor(
        retries=RetryMode.from_config(config["retries"]),  # type: ignore[arg-type]
        max_concurrent=int(config["max_concurrent"]),  # type: ignore[arg-type]
    )
