"""Running a stage where its inputs already are.

Every worker with a data plane also polls its own *direct* task queue. When all of a stage's
input artifacts are held by one worker that serves the stage's queue, the workflow first offers
the stage there, with a short schedule-to-start timeout: if that worker is busy or gone, the
stage falls back to its normal queue and any worker there fetches the inputs over HTTP. A
direct attempt that starts and fails hands its last checkpoint to the fallback, so nothing is
redone. This module is pure (the workflow sandbox imports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from stageflow.engine.types import StageResult

__all__ = ["LOCALITY_WAIT_S", "DirectOutcome", "Peers", "direct_outcome"]

LOCALITY_WAIT_S = 3.0
"""How long a stage waits for the worker holding its inputs before any worker may take it."""


@dataclass
class Peers:
    """What the workflow has learned of workers from their results: location → queues."""

    direct: dict[str, str] = field(default_factory=dict)
    serves: dict[str, list[str]] = field(default_factory=dict)

    def learn(self, result: StageResult) -> None:
        if result.location and result.direct_queue:
            self.direct[result.location] = result.direct_queue
            self.serves[result.location] = list(result.serves)

    def pick(self, locations: set[str], task_queue: str) -> str | None:
        """The direct queue of a worker holding all inputs and serving ``task_queue``."""
        for location in sorted(locations):
            if location in self.direct and task_queue in self.serves.get(location, ()):
                return self.direct[location]
        return None


@dataclass
class DirectOutcome:
    fatal: bool
    """The failure would fail the stage wherever it ran: do not fall back."""
    ran: bool
    """The direct attempt started (it counts as an attempt)."""
    checkpoint: Any = None


def direct_outcome(exc: ActivityError, non_retryable: list[str]) -> DirectOutcome:
    """What a failed direct attempt means for the fallback."""
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        if cause.type == TimeoutType.SCHEDULE_TO_START:
            return DirectOutcome(fatal=False, ran=False)
        return DirectOutcome(
            fatal=False, ran=True, checkpoint=_checkpoint(cause.last_heartbeat_details)
        )
    if isinstance(cause, ApplicationError):
        if cause.non_retryable or cause.type in non_retryable:
            return DirectOutcome(fatal=True, ran=True)
        return DirectOutcome(fatal=False, ran=True, checkpoint=_checkpoint(cause.details))
    return DirectOutcome(fatal=True, ran=True)


def _checkpoint(details: Any) -> Any:
    first = details[0] if details else None
    return first.get("checkpoint") if isinstance(first, dict) else None
