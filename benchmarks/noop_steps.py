"""No-op work for the engine benchmark: a stageflow ``python`` stage function and plain activities.

Imported by the stageflow worker (``noop_steps:noop``, found through ``sys.path``) and by the plain
baseline's worker. No side effects at import.
"""

from __future__ import annotations

from temporalio import activity

__all__ = ["NOOP_ACTIVITY", "NOOP_HEARTBEAT_ACTIVITY", "noop", "noop_activity", "noop_heartbeat"]

NOOP_ACTIVITY = "bench.noop"
NOOP_HEARTBEAT_ACTIVITY = "bench.noop_heartbeat"


async def noop(**_: object) -> None:
    """The stage function: takes whatever ``with`` gives it, does nothing, has no outputs."""
    return None


@activity.defn(name=NOOP_ACTIVITY)
async def noop_activity(index: int) -> None:
    """The baseline's activity: the same nothing, as a plain Temporal activity."""
    return None


@activity.defn(name=NOOP_HEARTBEAT_ACTIVITY)
async def noop_heartbeat(index: int) -> None:
    """Attribution only: one heartbeat at start, as a stage that awaits anything at all sends."""
    activity.heartbeat({})
    return None
