"""The one generic workflow that interprets every pipeline.

Each stage gets a coroutine that waits for its needs, its approval and the run being unpaused,
renders its templates, and runs its activity (or one per matrix instance) on the stage's task
queue. Everything here is deterministic: no I/O, clocks or randomness, only ``workflow.now()``.
Stages whose upstream failed are marked and skipped (unless their ``when`` asks to run on
failure or always); independent branches keep going, so a retry of the run has as little left
to do as possible.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from stageflow.engine import types as t
    from stageflow.engine.locality import LOCALITY_WAIT_S, Peers, direct_outcome
    from stageflow.spec.templates import TemplateError, render
    from stageflow.transfer.artifacts import ref_locations

__all__ = ["RUN_STAGE_ACTIVITY", "PipelineWorkflow"]

RUN_STAGE_ACTIVITY = "stageflow.run_stage"


@workflow.defn(name="stageflow.pipeline")
class PipelineWorkflow:
    @workflow.init
    def __init__(self, run: t.RunInput) -> None:
        # The workflow id is the run id, also for runs a Schedule starts (it suffixes the id).
        run.run_id = workflow.info().workflow_id
        run.started_at = run.started_at or workflow.info().start_time.isoformat()
        self._run = run
        self._plans = {stage.name: stage for stage in run.stages}
        self._state: dict[str, t.StageState] = {}
        for stage in run.stages:
            kept = run.previous.get(stage.name)
            if kept is not None and kept.status == t.SUCCEEDED:
                self._state[stage.name] = replace(kept, reused=True)
            else:
                partial = replace(kept, status=t.PENDING, error=None) if kept else None
                self._state[stage.name] = partial or t.StageState(task_queue=stage.task_queue)
        self._paused = False
        self._peers = Peers()
        self._approved: set[str] = set()
        self._status = "running"
        self._started_at = workflow.now().isoformat()
        self._finished_at: str | None = None

    # ------------------------------------------------------------------ signals and queries
    @workflow.signal
    def pause(self) -> None:
        """Start no new stage (or matrix instance) until ``resume``; running ones go on."""
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.signal
    def approve(self, stage: str | None = None) -> None:
        """Open the gate of ``stage``, or of every stage waiting for approval when None."""
        if stage is None:
            self._approved.update(
                name for name, st in self._state.items() if st.status == t.WAITING_APPROVAL
            )
        else:
            self._approved.add(stage)

    @workflow.query
    def state(self) -> t.RunState:
        status = "paused" if self._paused and self._status == "running" else self._status
        return t.RunState(
            run_id=self._run.run_id,
            pipeline=self._run.pipeline,
            status=status,
            paused=self._paused,
            params=self._run.params,
            stages=self._state,
            order=list(self._plans),
            started_at=self._started_at,
            finished_at=self._finished_at,
        )

    @workflow.query
    def run_input(self) -> t.RunInput:
        return self._run

    # ------------------------------------------------------------------ the run
    @workflow.run
    async def run(self, run: t.RunInput) -> dict[str, Any]:
        try:
            await asyncio.gather(*(self._drive(name) for name in self._plans))
        except asyncio.CancelledError:
            for st in self._state.values():
                if st.status not in t.TERMINAL:
                    st.status = t.CANCELLED
            self._finish("cancelled")
            raise
        failed = [name for name, st in self._state.items() if st.status == t.FAILED]
        if failed:
            self._finish("failed")
            first = self._state[failed[0]]
            raise ApplicationError(
                f"stage {failed[0]!r} failed: {first.error}",
                self._summary(),
                type="PipelineFailed",
                non_retryable=True,
            )
        self._finish("succeeded")
        return self._summary()

    def _finish(self, status: str) -> None:
        self._status = status
        self._finished_at = workflow.now().isoformat()

    def _summary(self) -> dict[str, Any]:
        return {
            "run_id": self._run.run_id,
            "pipeline": self._run.pipeline,
            "status": self._status,
            "stages": {
                name: {"status": st.status, "attempts": st.attempts, "outputs": st.outputs}
                for name, st in self._state.items()
            },
        }

    async def _drive(self, name: str) -> None:
        plan, st = self._plans[name], self._state[name]
        if st.status == t.SUCCEEDED:
            return
        await workflow.wait_condition(
            lambda: all(self._state[need].status in t.TERMINAL for need in plan.needs)
        )
        upstream_ok = all(self._state[need].status == t.SUCCEEDED for need in plan.needs)
        if plan.when == "success" and not upstream_ok:
            st.status = t.UPSTREAM_FAILED
            return
        if plan.when == "failure" and upstream_ok:
            st.status = t.SKIPPED
            return
        if plan.gate == "approve" and name not in self._approved:
            st.status = t.WAITING_APPROVAL
            await workflow.wait_condition(lambda: name in self._approved)
        await workflow.wait_condition(lambda: not self._paused)
        st.status, st.started_at = t.RUNNING, workflow.now().isoformat()
        st.error = st.error_type = None
        try:
            if plan.matrix is None:
                params = render(plan.params, self._scope())
                result = await self._execute(plan, params, None, None)
                st.outputs, st.attempts, st.worker = result.outputs, result.attempt, result.worker
            else:
                await self._fan_out(plan, st)
            st.status = t.SUCCEEDED
        except TemplateError as exc:
            st.status, st.error, st.error_type = t.FAILED, str(exc), "TemplateError"
        except ActivityError as exc:
            st.status = t.FAILED
            st.error, st.error_type, attempts = _describe_failure(exc, plan)
            st.attempts = max(st.attempts, attempts)
        finally:
            st.finished_at = workflow.now().isoformat()

    async def _fan_out(self, plan: t.StagePlan, st: t.StageState) -> None:
        scope = self._scope()
        combos = _expand_matrix(render(plan.matrix, scope), plan.name)
        kept = st.instance_outputs if st.instance_matrix == combos else None
        outputs: list[Any] = list(kept) if kept else [None] * len(combos)
        st.instances, st.instance_matrix, st.instance_outputs = len(combos), combos, outputs
        st.instances_done = sum(out is not None for out in outputs)
        limit = asyncio.Semaphore(plan.max_parallel or max(len(combos), 1))
        failures: list[ActivityError] = []

        async def instance(index: int, values: dict[str, Any]) -> None:
            if outputs[index] is not None:
                return
            async with limit:
                await workflow.wait_condition(lambda: not self._paused)
                if failures and plan.max_parallel:
                    return
                params = render(plan.params, {**scope, "matrix": values})
                try:
                    result = await self._execute(plan, params, index, values)
                except ActivityError as exc:
                    failures.append(exc)
                    return
                outputs[index] = result.outputs
                st.attempts = max(st.attempts, result.attempt)
                st.instances_done += 1

        await asyncio.gather(*(instance(i, values) for i, values in enumerate(combos)))
        if failures:
            raise failures[0]
        st.outputs = outputs

    async def _execute(
        self, plan: t.StagePlan, params: dict[str, Any], index: int | None, values: Any
    ) -> t.StageResult:
        """Run one stage (instance): near its inputs if a worker there is free, else anywhere."""
        task = t.StageTask(
            run_id=self._run.run_id,
            pipeline=self._run.pipeline,
            stage=plan.name,
            uses=plan.uses,
            params=params,
            instance=index,
            matrix=values,
            heartbeat_timeout_s=plan.heartbeat_timeout_s,
            persist=plan.persist,
        )
        activity_id = plan.name if index is None else f"{plan.name}[{index}]"
        attempts = plan.retry.max_attempts
        direct = self._peers.pick(ref_locations(params), plan.task_queue)
        if direct is not None:
            try:
                result = await self._activity(
                    plan, task, direct, f"{activity_id}@near", attempts=1, near=True
                )
                self._peers.learn(result)
                return result
            except ActivityError as exc:
                outcome = direct_outcome(exc, plan.retry.non_retryable)
                if outcome.fatal or (outcome.ran and attempts == 1):
                    raise
                if outcome.ran:
                    attempts -= 1
                    task.attempt_offset, task.resume = 1, outcome.checkpoint
        result = await self._activity(plan, task, plan.task_queue, activity_id, attempts=attempts)
        self._peers.learn(result)
        return result

    async def _activity(
        self,
        plan: t.StagePlan,
        task: t.StageTask,
        task_queue: str,
        activity_id: str,
        *,
        attempts: int,
        near: bool = False,
    ) -> t.StageResult:
        retry = plan.retry
        return await workflow.execute_activity(
            RUN_STAGE_ACTIVITY,
            task,
            result_type=t.StageResult,
            task_queue=task_queue,
            activity_id=activity_id,
            start_to_close_timeout=timedelta(seconds=plan.timeout_s),
            schedule_to_start_timeout=timedelta(seconds=LOCALITY_WAIT_S) if near else None,
            heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout_s),
            retry_policy=RetryPolicy(
                maximum_attempts=attempts,
                initial_interval=timedelta(seconds=retry.initial_interval_s),
                backoff_coefficient=retry.backoff,
                maximum_interval=(
                    timedelta(seconds=retry.max_interval_s) if retry.max_interval_s else None
                ),
                non_retryable_error_types=retry.non_retryable,
            ),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

    def _scope(self) -> dict[str, Any]:
        started = datetime.fromisoformat(self._run.started_at or "")
        failed = [name for name, st in self._state.items() if st.status == t.FAILED]
        scope: dict[str, Any] = {
            "params": self._run.params,
            "run": {
                "id": self._run.run_id,
                "pipeline": self._run.pipeline,
                "started_at": started.isoformat(),
                "date": started.date().isoformat(),
                "status": "failing" if failed else "running",
                "failed": failed,
            },
        }
        for name, st in self._state.items():
            if st.status == t.SUCCEEDED:
                scope[name] = {"outputs": st.outputs}
        return scope


def _expand_matrix(matrix: Any, stage: str) -> list[dict[str, Any]]:
    """The instances of a matrix, in order: the cartesian product of its lists."""
    if not isinstance(matrix, dict):
        raise TemplateError(f"stage {stage!r}: matrix must be a mapping of lists")
    for key, values in matrix.items():
        if not isinstance(values, list):
            kind = type(values).__name__
            raise TemplateError(f"stage {stage!r}: matrix.{key} must be a list, got {kind}")
    keys = list(matrix)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*matrix.values())]


def _describe_failure(exc: ActivityError, plan: t.StagePlan) -> tuple[str, str | None, int]:
    """A message, error type and attempt count for a failed activity."""
    cause = exc.cause
    exhausted = exc.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
    attempts = plan.retry.max_attempts if exhausted else 1
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else None
        if isinstance(details, dict):
            attempts = int(details.get("attempt", attempts))
        return cause.message, cause.type, attempts
    if isinstance(cause, TimeoutError):
        if cause.type == TimeoutType.HEARTBEAT:
            message = f"no heartbeat for {plan.heartbeat_timeout_s:g}s: the worker was lost"
        else:
            message = f"timed out after {plan.timeout_s:g}s (the stage's timeout)"
        return message, "TimeoutError", attempts
    if cause is not None:
        return str(cause) or type(cause).__name__, type(cause).__name__, attempts
    return str(exc), None, attempts
