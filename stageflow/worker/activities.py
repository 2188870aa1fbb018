"""The activity every stage runs as: find the executor, keep heartbeating, return outputs.

Errors leave here as ``ApplicationError`` whose ``type`` is the original exception's class
name, so a stage's ``retry.non_retryable: [ValueError]`` matches what users raise.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stageflow.engine.types import StageResult, StageTask
from stageflow.engine.workflow import RUN_STAGE_ACTIVITY
from stageflow.errors import StageError, StageOutputError
from stageflow.executors.registry import get_executor
from stageflow.worker.context import StageContext

__all__ = ["MAX_OUTPUT_BYTES", "StageActivities"]

MAX_OUTPUT_BYTES = 256 * 1024
"""Outputs travel through Temporal; bigger data belongs in an artifact."""


class StageActivities:
    """Holds the worker's identity so results can say where a stage ran."""

    def __init__(self, *, identity: str) -> None:
        self.identity = identity

    @activity.defn(name=RUN_STAGE_ACTIVITY)
    async def run_stage(self, task: StageTask) -> StageResult:
        info = activity.info()
        previous = info.heartbeat_details[0] if info.heartbeat_details else None
        ctx = StageContext(
            run_id=task.run_id,
            pipeline=task.pipeline,
            stage=task.stage,
            attempt=info.attempt,
            instance=task.instance,
            matrix=task.matrix,
            worker=self.identity,
            previous_details=previous,
        )
        beat = asyncio.create_task(_heartbeat_forever(ctx, task.heartbeat_timeout_s))
        try:
            executor = get_executor(task.uses)()
            outputs = await executor.execute(task.params, ctx)
            outputs = _checked_outputs(outputs, task.uses)
        except asyncio.CancelledError:
            ctx.logger.warning("stage cancelled")
            raise
        except ApplicationError:
            raise
        except Exception as exc:
            raise _as_application_error(exc, info.attempt) from exc
        finally:
            beat.cancel()
        return StageResult(outputs=outputs, attempt=info.attempt, worker=self.identity)


async def _heartbeat_forever(ctx: StageContext, heartbeat_timeout_s: float) -> None:
    """Heartbeat often enough that a lost worker is noticed after ``heartbeat_timeout_s``."""
    interval = max(0.1, min(1.0, heartbeat_timeout_s / 4))
    while True:
        activity.heartbeat(ctx.heartbeat_details())
        await asyncio.sleep(interval)


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


def _as_application_error(exc: Exception, attempt: int) -> ApplicationError:
    non_retryable = isinstance(exc, ValidationError) or (
        isinstance(exc, StageError) and exc.non_retryable
    )
    message = str(exc) or type(exc).__name__
    tail = "".join(traceback.format_exception(exc)[-6:])
    return ApplicationError(
        message,
        {"attempt": attempt, "traceback": tail},
        type=type(exc).__name__,
        non_retryable=non_retryable,
    )
