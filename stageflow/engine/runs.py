"""Runs, from the client's side: start, watch, steer and retry pipeline workflows.

A run id is the Temporal workflow id. Retrying a failed run starts a new execution under the
same id whose input carries the stages that already succeeded, so they are not run again.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.service import RPCError, RPCStatusCode

from stageflow.engine import types as t
from stageflow.engine.routing import WORKFLOW_TASK_QUEUE, stage_task_queue
from stageflow.engine.workflow import PipelineWorkflow
from stageflow.errors import EngineError, RunNotFoundError
from stageflow.spec.model import Pipeline
from stageflow.transfer.artifacts import find_refs

__all__ = [
    "RunInfo",
    "approve_run",
    "cancel_run",
    "compile_run",
    "list_runs",
    "live_activities",
    "new_run_id",
    "pause_run",
    "resume_run",
    "retry_run",
    "run_handle",
    "run_state",
    "start_run",
    "summarize",
]

_CLOSED_STATUS = {
    Status.COMPLETED: "succeeded",
    Status.FAILED: "failed",
    Status.CANCELED: "cancelled",
    Status.TERMINATED: "terminated",
    Status.TIMED_OUT: "timed_out",
    Status.CONTINUED_AS_NEW: "continued",
}
_RETRYABLE = {"failed", "cancelled", "terminated", "timed_out"}


def new_run_id(pipeline: str) -> str:
    """``<pipeline>-<utc time>-<random>``: sortable, readable, unique."""
    return f"{pipeline}-{datetime.utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def compile_run(pipeline: Pipeline, *, run_id: str, heartbeat_timeout: float) -> t.RunInput:
    """The workflow's input: each stage with its task queue routed and defaults applied."""
    stages = []
    for name, stage in pipeline.stages.items():
        retry = stage.retry
        stages.append(
            t.StagePlan(
                name=name,
                uses=stage.uses,
                task_queue=stage_task_queue(stage.queue, stage.tags),
                needs=list(stage.needs),
                params=dict(stage.with_),
                retry=t.RetryPlan(
                    max_attempts=retry.max_attempts,
                    initial_interval_s=retry.initial_interval,
                    backoff=retry.backoff,
                    max_interval_s=retry.max_interval,
                    non_retryable=list(retry.non_retryable),
                ),
                timeout_s=stage.timeout,
                heartbeat_timeout_s=stage.heartbeat_timeout or heartbeat_timeout,
                matrix=stage.matrix,
                max_parallel=stage.max_parallel,
                gate=stage.gate,
                persist=stage.persist,
                when=stage.when,
            )
        )
    return t.RunInput(
        run_id=run_id,
        pipeline=pipeline.name,
        params=dict(pipeline.params),
        stages=stages,
        spec=pipeline.to_dict(),
    )


async def start_run(client: Client, run: t.RunInput) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        PipelineWorkflow.run,
        run,
        id=run.run_id,
        task_queue=WORKFLOW_TASK_QUEUE,
        memo={"pipeline": run.pipeline},
    )


def run_handle(client: Client, run_id: str) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(run_id)


async def run_state(client: Client, run_id: str) -> t.RunState:
    """The run's live state (a workflow query; closed runs are answered by replay)."""
    handle = run_handle(client, run_id)
    try:
        state = await handle.query(PipelineWorkflow.state)
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFoundError(run_id) from None
        raise EngineError(f"cannot read run {run_id!r}: {exc.message}") from None
    closed = _CLOSED_STATUS.get(description.status) if description.status else None
    if closed and closed not in {"succeeded", "failed"}:
        state.status = closed
    return state


def summarize(state: t.RunState) -> dict[str, Any]:
    """The ``--json`` document: run id, status, and each stage's status, attempts and outputs."""
    return {
        "run_id": state.run_id,
        "pipeline": state.pipeline,
        "status": state.status,
        "stages": {
            name: {"status": st.status, "attempts": st.attempts, "outputs": st.outputs}
            for name, st in state.stages.items()
        },
    }


@dataclass
class RunInfo:
    run_id: str
    pipeline: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None


async def list_runs(
    client: Client, *, limit: int = 20, pipeline: str | None = None
) -> list[RunInfo]:
    query = "WorkflowType = 'stageflow.pipeline'"
    runs: list[RunInfo] = []
    async for execution in client.list_workflows(query, limit=limit):
        memo = await execution.memo()
        name = str(memo.get("pipeline", ""))
        if pipeline and name != pipeline:
            continue
        status = _CLOSED_STATUS.get(execution.status, "running") if execution.status else "?"
        runs.append(RunInfo(execution.id, name, status, execution.start_time, execution.close_time))
    return runs


async def _signal(client: Client, run_id: str, signal: Any, *args: Any) -> None:
    handle = run_handle(client, run_id)
    try:
        await handle.signal(signal, *args)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise EngineError(f"run {run_id!r} is not running (or does not exist)") from None
        raise EngineError(f"cannot signal run {run_id!r}: {exc.message}") from None


async def pause_run(client: Client, run_id: str) -> None:
    await _signal(client, run_id, PipelineWorkflow.pause)


async def resume_run(client: Client, run_id: str) -> None:
    await _signal(client, run_id, PipelineWorkflow.resume)


async def approve_run(client: Client, run_id: str, stage: str | None = None) -> None:
    state = await run_state(client, run_id)
    if stage is not None and stage not in state.stages:
        raise EngineError(
            f"run {run_id!r} has no stage {stage!r} (stages: {', '.join(state.stages)})"
        )
    await _signal(client, run_id, PipelineWorkflow.approve, stage)


async def cancel_run(client: Client, run_id: str) -> None:
    handle = run_handle(client, run_id)
    try:
        await handle.cancel()
    except RPCError as exc:
        raise EngineError(f"cannot cancel run {run_id!r}: {exc.message}") from None


async def retry_run(client: Client, run_id: str) -> WorkflowHandle[Any, Any]:
    """Start the run again under the same id, keeping every stage that succeeded."""
    handle = run_handle(client, run_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFoundError(run_id) from None
        raise
    status = _CLOSED_STATUS.get(description.status) if description.status else None
    if status is None or status == "running":
        raise EngineError(f"run {run_id!r} is still running: only a finished run can be retried")
    if status not in _RETRYABLE:
        raise EngineError(f"run {run_id!r} {status}: there is nothing to retry")
    previous_input = await handle.query(PipelineWorkflow.run_input)
    state = await handle.query(PipelineWorkflow.state)
    lost = _failed_over(state)
    previous_input.previous = {
        name: st
        for name, st in state.stages.items()
        if (st.status == t.SUCCEEDED or st.instance_outputs) and not (_made(st) & lost)
    }
    return await start_run(client, previous_input)


_SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
_LOST_INPUT_ERRORS = {"IntegrityError", "TransferError"}


def _failed_over(state: t.RunState) -> set[str]:
    """Objects that stages failed to fetch (corrupt, or no longer served anywhere), as their
    errors name them: the stages that made them must run again, or a retry would only fetch
    the same bad copy (or none) and fail again."""
    return {
        sha
        for st in state.stages.values()
        if st.status == t.FAILED and st.error and st.error_type in _LOST_INPUT_ERRORS
        for sha in _SHA256.findall(st.error)
    }


def _made(stage: t.StageState) -> set[str]:
    """The objects of the artifacts a stage returned (every instance's, for a matrix)."""
    return {ref["sha256"] for ref in find_refs([stage.outputs, stage.instance_outputs])}


@dataclass
class LiveActivity:
    """A stage activity in flight, as Temporal's describe shows it."""

    activity_id: str
    state: str
    attempt: int
    progress: dict[str, Any] | None
    last_failure: str | None


async def live_activities(client: Client, run_id: str) -> dict[str, LiveActivity]:
    """In-flight stage activities by activity id (``stage`` or ``stage[i]``), with progress."""
    description = await run_handle(client, run_id).describe()
    found: dict[str, LiveActivity] = {}
    for pending in description.raw_description.pending_activities:
        progress = None
        if pending.heartbeat_details.payloads:
            decoded = await client.data_converter.decode(pending.heartbeat_details.payloads)
            if decoded and isinstance(decoded[0], dict):
                progress = decoded[0].get("progress")
        failure = pending.last_failure.message if pending.HasField("last_failure") else None
        state = PendingActivityState.Name(pending.state).removeprefix("PENDING_ACTIVITY_STATE_")
        found[pending.activity_id] = LiveActivity(
            pending.activity_id, state.lower(), pending.attempt, progress, failure or None
        )
    return found
