"""The small, plain data that crosses Temporal: run input, stage tasks, results and state.

Only dataclasses of JSON values live here, so the workflow sandbox can import this module and
Temporal's default JSON converter can carry every type. Big data never goes here: artifacts
travel as refs.
"""

# No ``from __future__ import annotations`` here: Temporal's converter resolves these
# dataclasses' type hints on every decode, and real annotations make that ~3x cheaper.
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RETRYABLE_FAILURE",
    "TERMINAL",
    "RetryPlan",
    "RunInput",
    "RunState",
    "StagePlan",
    "StageResult",
    "StageState",
    "StageTask",
]

# Stage statuses. Terminal ones never change again within one execution.
PENDING = "pending"
WAITING_APPROVAL = "waiting_approval"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
UPSTREAM_FAILED = "upstream_failed"
CANCELLED = "cancelled"
SKIPPED = "skipped"
"""A ``when: failure`` stage whose needs all succeeded: nothing to react to."""
TERMINAL = frozenset({SUCCEEDED, FAILED, UPSTREAM_FAILED, CANCELLED, SKIPPED})
RETRYABLE_FAILURE = frozenset({FAILED, UPSTREAM_FAILED, CANCELLED})


@dataclass
class RetryPlan:
    max_attempts: int
    initial_interval_s: float
    backoff: float
    max_interval_s: float | None
    non_retryable: list[str]


@dataclass
class StagePlan:
    """One stage as the workflow needs it: templates unrendered, the queue already routed."""

    name: str
    uses: str
    task_queue: str
    needs: list[str]
    params: dict[str, Any]
    retry: RetryPlan
    timeout_s: float
    heartbeat_timeout_s: float
    matrix: dict[str, Any] | None = None
    max_parallel: int | None = None
    gate: str | None = None
    persist: bool = False
    when: str = "success"


@dataclass
class StageState:
    """What is known of a stage; the ``state`` query and the run summary are made of these."""

    status: str = PENDING
    attempts: int = 0
    outputs: Any = None
    error: str | None = None
    error_type: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    task_queue: str = ""
    worker: str | None = None
    instances: int = 0
    instances_done: int = 0
    instance_outputs: list[Any] | None = None
    instance_matrix: list[dict[str, Any]] | None = None
    reused: bool = False


@dataclass
class RunInput:
    """Everything one run needs; ``previous`` carries stages kept from a failed execution."""

    run_id: str
    pipeline: str
    params: dict[str, Any]
    stages: list[StagePlan]
    previous: dict[str, StageState] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    """When the run first started (ISO, UTC): ``${run.date}`` stays the same across retries."""


@dataclass
class StageTask:
    """The input of one stage activity (one matrix instance, or the whole stage)."""

    run_id: str
    pipeline: str
    stage: str
    uses: str
    params: dict[str, Any]
    instance: int | None = None
    matrix: dict[str, Any] | None = None
    heartbeat_timeout_s: float = 10.0
    persist: bool = False
    resume: Any = None
    """A checkpoint handed over from an attempt on another task queue (see ``locality``)."""
    attempt_offset: int = 0
    """Attempts already made on another task queue, so ``ctx.attempt`` keeps counting."""


@dataclass
class StageResult:
    outputs: dict[str, Any]
    attempt: int
    worker: str
    location: str | None = None
    """The base URL of the worker's artifact server, where its outputs' data is."""
    direct_queue: str | None = None
    """The task queue only this worker polls (for stages whose inputs it holds)."""
    serves: list[str] = field(default_factory=list)
    """The task queues this worker polls."""


@dataclass
class RunState:
    run_id: str
    pipeline: str
    status: str
    paused: bool
    params: dict[str, Any]
    stages: dict[str, StageState]
    order: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None

    def __post_init__(self) -> None:
        # JSON payloads sort keys; put stages back in spec order.
        if self.order:
            self.stages = {name: self.stages[name] for name in self.order if name in self.stages}
