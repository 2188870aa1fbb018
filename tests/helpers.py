"""Helpers for running pipelines on the session's dev server (importable: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from temporalio.client import Client, WorkflowFailureError

from stageflow.engine.runs import compile_run, run_state, start_run
from stageflow.engine.types import RunState
from stageflow.spec.model import Pipeline

STEPS = "steps"
TOKEN = "test-token-" + "t" * 24
"""The deployment token of the data planes tests start in-process."""


def fn(name: str) -> str:
    return f"{STEPS}:{name}"


def pipeline(stages: dict[str, Any], **extra: Any) -> Pipeline:
    return Pipeline.model_validate({"name": "t", "stages": stages, **extra})


async def start(client: Client, spec: Pipeline, *, heartbeat_timeout: float = 5.0) -> str:
    run_id = f"test-{uuid.uuid4().hex[:12]}"
    await start_run(client, compile_run(spec, run_id=run_id, heartbeat_timeout=heartbeat_timeout))
    return run_id


async def finish(client: Client, run_id: str, timeout: float = 60) -> RunState:
    """Wait for the run to close (success or not) and return its final state."""
    handle = client.get_workflow_handle(run_id)
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout)
    return await run_state(client, run_id)


async def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.1) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
