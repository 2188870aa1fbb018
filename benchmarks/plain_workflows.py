"""The plain Temporal SDK baselines of the engine benchmark.

Workflows only, side-effect free: the workflow sandbox re-imports this module. They call the no-op
activity by name, so nothing of the activity side is imported into the sandbox.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

__all__ = ["PlainFanout", "PlainSequential"]

NOOP_ACTIVITY = "bench.noop"  # noop_steps.NOOP_ACTIVITY
_TIMEOUT = timedelta(seconds=60)


@workflow.defn(name="bench.plain_sequential")
class PlainSequential:
    """``n`` no-op activities, one after the other."""

    @workflow.run
    async def run(self, n: int) -> int:
        for index in range(n):
            await workflow.execute_activity(
                NOOP_ACTIVITY, index, start_to_close_timeout=_TIMEOUT
            )
        return n


@workflow.defn(name="bench.plain_fanout")
class PlainFanout:
    """``n`` no-op activities started at once and gathered."""

    @workflow.run
    async def run(self, n: int) -> int:
        await asyncio.gather(
            *(
                workflow.execute_activity(NOOP_ACTIVITY, index, start_to_close_timeout=_TIMEOUT)
                for index in range(n)
            )
        )
        return n
