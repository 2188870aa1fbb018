"""Which Temporal task queue a stage goes to, and which ones a worker polls.

Routing uses only Temporal's own primitive, the task queue. A stage with no tags goes to its
``queue``; a stage with tags goes to a tag-qualified queue, ``ml[a100,gpu]`` (tags sorted). A
worker started with ``--queue ml --tags gpu,a100`` polls ``ml`` and one queue for every subset
of its tags (``ml[gpu]``, ``ml[a100]``, ``ml[a100,gpu]``). So a tagged stage can only be taken
by a worker carrying all its tags, any such worker can take it, and Temporal's matching does
the load balancing. The cost is 2^n pollers for n tags, so a worker carries at most
``MAX_WORKER_TAGS`` tags.

Workflow tasks (the pipeline interpreter itself, light and quick) have their own queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

__all__ = ["MAX_WORKER_TAGS", "WORKFLOW_TASK_QUEUE", "stage_task_queue", "worker_task_queues"]

WORKFLOW_TASK_QUEUE = "stageflow.workflows"
MAX_WORKER_TAGS = 5


def stage_task_queue(queue: str, tags: Iterable[str] = ()) -> str:
    """The task queue a stage on ``queue`` requiring ``tags`` is scheduled on."""
    wanted = sorted(set(tags))
    return f"{queue}[{','.join(wanted)}]" if wanted else queue


def worker_task_queues(queue: str, tags: Iterable[str] = ()) -> list[str]:
    """Every task queue a worker on ``queue`` carrying ``tags`` must poll."""
    carried = sorted(set(tags))
    if len(carried) > MAX_WORKER_TAGS:
        raise ValueError(
            f"a worker carries at most {MAX_WORKER_TAGS} tags ({len(carried)} given): "
            "each tag doubles the task queues it polls"
        )
    return [
        stage_task_queue(queue, subset)
        for size in range(len(carried) + 1)
        for subset in combinations(carried, size)
    ]
