"""No-op work for the engine benchmark: a stageflow ``python`` stage function and a plain activity.

Imported by the stageflow worker (``noop_steps:noop``, found through ``sys.path``) and by the plain
baseline. No side effects at import: the workflow sandbox may import it.
"""

from __future__ import annotations

from temporalio import activity

__all__ = ["NOOP_ACTIVITY", "noop", "noop_activity"]

NOOP_ACTIVITY = "bench.noop"


async def noop(**_: object) -> None:
    """The stage function: takes whatever ``with`` gives it, does nothing, has no outputs."""
    return None


@activity.defn(name=NOOP_ACTIVITY)
async def noop_activity(index: int) -> None:
    """The baseline's activity: the same nothing, as a plain Temporal activity."""
    return None
