"""The activity every stage runs as: find the executor, keep heartbeating, return outputs.

Errors leave here as ``ApplicationError`` whose ``type`` is the original exception's class
name, so a stage's ``retry.non_retryable: [ValueError]`` matches what users raise.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stageflow.engine.types import StageResult, StageTask
from stageflow.engine.workflow import RUN_STAGE_ACTIVITY
from stageflow.errors import ConfigError, StageError, StageOutputError
from stageflow.executors.registry import get_executor
from stageflow.transfer.artifacts import find_refs, map_refs
from stageflow.worker.context import StageContext
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.events import EventReporter
from stageflow.worker.logcapture import stage_scope

__all__ = ["MAX_OUTPUT_BYTES", "StageActivities"]

MAX_OUTPUT_BYTES = 256 * 1024
"""Outputs travel through Temporal; bigger data belongs in an artifact."""


class StageActivities:
    """The worker's side of a stage: its identity, and its data plane for artifacts."""

    def __init__(
        self,
        *,
        identity: str,
        data_plane: DataPlane | None = None,
        server_url: str | None = None,
    ) -> None:
        self.identity = identity
        self.data_plane = data_plane
        self.server_url = server_url
        self.direct_queue: str | None = None
        self.serves: list[str] = []
        self.running = 0
        """Stages running in this process now (reported in the worker's heartbeat)."""
        self.events: EventReporter | None = None
        """Where attempt events go (set when the worker reports to a control plane)."""

    @activity.defn(name=RUN_STAGE_ACTIVITY)
    async def run_stage(self, task: StageTask) -> StageResult:
        info = activity.info()
        previous = info.heartbeat_details[0] if info.heartbeat_details else None
        if previous is None and task.resume is not None:
            previous = {"checkpoint": task.resume}
        attempt = info.attempt + task.attempt_offset
        ctx = StageContext(
            run_id=task.run_id,
            pipeline=task.pipeline,
            stage=task.stage,
            attempt=attempt,
            instance=task.instance,
            matrix=task.matrix,
            worker=self.identity,
            previous_details=previous,
            data_plane=self.data_plane,
            server_url=self.server_url,
        )
        self.running += 1
        self._event(ctx, "started", {"queue": info.task_queue})
        started = time.monotonic()
        try:
            # Everything the stage prints or logs from here on (in tasks and threads it starts
            # through asyncio too) is captured as this attempt's (worker/logcapture.py).
            with stage_scope(ctx.key):
                outputs = await self._run(task, ctx)
        except asyncio.CancelledError:
            self._event(ctx, "cancelled", {"duration_s": time.monotonic() - started})
            raise
        except ApplicationError as exc:
            detail = {"duration_s": time.monotonic() - started, "error": exc.message}
            self._event(ctx, "failed", {**detail, "type": exc.type})
            raise
        finally:
            self.running -= 1
        detail = {"duration_s": time.monotonic() - started, "outputs": outputs}
        if isinstance(outputs.get("bytes"), int) and outputs.get("seconds"):
            detail.update(bytes=outputs["bytes"], seconds=outputs["seconds"])
        self._event(ctx, "succeeded", detail)
        return StageResult(
            outputs=outputs,
            attempt=attempt,
            worker=self.identity,
            location=self.data_plane.url if self.data_plane else None,
            direct_queue=self.direct_queue,
            serves=self.serves,
        )

    def _event(self, ctx: StageContext, status: str, detail: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.report(
                run_id=ctx.run_id,
                stage=ctx.stage,
                instance=ctx.instance,
                attempt=ctx.attempt,
                status=status,
                worker=self.identity,
                detail=detail,
            )

    async def _run(self, task: StageTask, ctx: StageContext) -> dict[str, Any]:
        beat = asyncio.create_task(_heartbeat_forever(ctx, task.heartbeat_timeout_s))
        try:
            executor = get_executor(task.uses)()
            params = (
                await self._inputs(task, ctx, native_paths=executor.native_paths)
                if executor.fetch_inputs
                else task.params
            )
            outputs = await executor.execute(params, ctx)
            outputs = _checked_outputs(outputs, task.uses)
            if task.persist:
                outputs = await self._persist(outputs, ctx)
        except asyncio.CancelledError:
            ctx.logger.warning("stage cancelled")
            raise
        except ApplicationError:
            raise
        except Exception as exc:
            raise _as_application_error(exc, ctx) from exc
        finally:
            beat.cancel()
        return outputs

    async def _inputs(self, task: StageTask, ctx: StageContext, *, native_paths: bool) -> Any:
        """The stage's parameters with every artifact ref fetched, verified and made local."""
        if not any(find_refs(task.params)):
            return task.params
        if self.data_plane is None:
            raise StageError("this stage takes artifacts but the worker has no data plane")

        def progress(done: int, total: int) -> None:
            ctx.progress(done, total, "bytes fetched")

        return await self.data_plane.materialize(
            task.params, task.run_id, ctx.name, as_path=native_paths, progress=progress
        )

    async def _persist(self, outputs: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        """Push every artifact in ``outputs`` to the data server, then drop the staging copy."""
        refs = list(find_refs(outputs))
        if not refs:
            return outputs
        if self.data_plane is None or not self.server_url:
            raise ConfigError(
                "`persist: true` needs a data server: start `stageflow server` and set "
                "STAGEFLOW_DATA_SERVER_URL on the workers"
            )
        pushed = {}
        for ref in refs:
            pushed[ref["sha256"]] = await self.data_plane.push(
                ref, self.server_url, keep_local=False
            )
        self.data_plane.clean_stage(ctx.run_id, ctx.name)
        return map_refs(outputs, lambda ref: pushed[ref["sha256"]])  # type: ignore[no-any-return]


async def _heartbeat_forever(ctx: StageContext, heartbeat_timeout_s: float) -> None:
    """Heartbeat often enough that a lost worker is noticed after ``heartbeat_timeout_s``."""
    interval = max(0.1, min(1.0, heartbeat_timeout_s / 4))
    while True:
        # Sleep first: a stage shorter than one interval costs the server no heartbeat write
        # (checkpoints and progress are sent at once by the context anyway).
        await asyncio.sleep(interval)
        activity.heartbeat(ctx.heartbeat_details())


def _checked_outputs(outputs: Any, uses: str) -> dict[str, Any]:
    if outputs is None:
        return {}
    if not isinstance(outputs, dict):
        raise StageOutputError(
            f"the {uses} stage returned {type(outputs).__name__}; it must return a dict of outputs"
        )
    try:
        size = len(json.dumps(outputs))
    except (TypeError, ValueError) as exc:
        raise StageOutputError(f"stage outputs must be JSON values: {exc}") from None
    if size > MAX_OUTPUT_BYTES:
        raise StageOutputError(
            f"stage outputs are {size} bytes (limit {MAX_OUTPUT_BYTES}): publish big data as an "
            "artifact and return its ref"
        )
    return outputs


def _as_application_error(exc: Exception, ctx: StageContext) -> ApplicationError:
    non_retryable = isinstance(exc, ValidationError | ConfigError) or (
        isinstance(exc, StageError) and exc.non_retryable
    )
    message = str(exc) or type(exc).__name__
    tail = "".join(traceback.format_exception(exc)[-6:])
    details = {"attempt": ctx.attempt, "traceback": tail, **ctx.heartbeat_details()}
    return ApplicationError(
        message,
        details,
        type=type(exc).__name__,
        non_retryable=non_retryable,
    )
