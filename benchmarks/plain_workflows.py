"""The plain Temporal SDK baselines of the engine benchmark.

Workflows only, side-effect free: the workflow sandbox re-imports this module. They call the no-op
activities by name, so nothing of the activity side is imported into the sandbox.

With no options they are the plain baseline: activities on the workflow's own task queue, only a
start-to-close timeout. ``PlainOptions`` builds the attribution baselines that take on stageflow's
choices one at a time: activities on another task queue than the workflow (so no eager dispatch),
a heartbeat timeout, and a heartbeat sent at the start of every activity.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow

__all__ = ["PlainFanout", "PlainOptions", "PlainSequential"]

NOOP_ACTIVITY = "bench.noop"  # noop_steps.NOOP_ACTIVITY
NOOP_HEARTBEAT_ACTIVITY = "bench.noop_heartbeat"  # noop_steps.NOOP_HEARTBEAT_ACTIVITY
_TIMEOUT = timedelta(seconds=60)


@dataclass
class PlainOptions:
    activity_task_queue: str | None = None  # None: the workflow's own queue
    heartbeat_timeout_s: float | None = None  # as stageflow sets on every stage activity
    heartbeat: bool = False  # the activity heartbeats once at its start


def _noop(index: int, options: PlainOptions | None) -> Any:
    options = options or PlainOptions()
    timeout = options.heartbeat_timeout_s
    return workflow.execute_activity(
        NOOP_HEARTBEAT_ACTIVITY if options.heartbeat else NOOP_ACTIVITY,
        index,
        task_queue=options.activity_task_queue,
        start_to_close_timeout=_TIMEOUT,
        heartbeat_timeout=timedelta(seconds=timeout) if timeout is not None else None,
    )


@workflow.defn(name="bench.plain_sequential")
class PlainSequential:
    """``n`` no-op activities, one after the other."""

    @workflow.run
    async def run(self, n: int, options: PlainOptions | None = None) -> int:
        for index in range(n):
            await _noop(index, options)
        return n


@workflow.defn(name="bench.plain_fanout")
class PlainFanout:
    """``n`` no-op activities started at once and gathered."""

    @workflow.run
    async def run(self, n: int, options: PlainOptions | None = None) -> int:
        await asyncio.gather(*(_noop(index, options) for index in range(n)))
        return n
