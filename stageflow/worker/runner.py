"""The worker process: Temporal workers on the task queues a stageflow worker serves.

One Temporal ``Worker`` per task queue (a queue and each subset of the worker's tags, see
``engine.routing``), all sharing one client, plus one for the pipeline workflow itself unless
told otherwise. Stopping is graceful: pollers stop, running stages get ``shutdown_grace``
seconds to finish, then are cancelled and Temporal retries them elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from stageflow.engine.routing import WORKFLOW_TASK_QUEUE, worker_task_queues
from stageflow.engine.workflow import PipelineWorkflow
from stageflow.settings import WorkerSettings
from stageflow.worker.activities import StageActivities
from stageflow.worker.dataplane import DataPlane

__all__ = ["StageWorker", "default_identity", "task_queues_for"]


def default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def task_queues_for(queues: Iterable[str], tags: Iterable[str]) -> list[str]:
    """Every task queue a worker on ``queues`` carrying ``tags`` polls, without repeats."""
    tags = list(tags)
    seen: dict[str, None] = {}
    for queue in queues:
        for task_queue in worker_task_queues(queue, tags):
            seen[task_queue] = None
    return list(seen)


class StageWorker:
    """A set of Temporal workers serving stage task queues (and the workflow queue)."""

    def __init__(
        self,
        client: Client,
        *,
        task_queues: Iterable[str],
        workflows: bool = True,
        identity: str | None = None,
        settings: WorkerSettings | None = None,
        data_plane: DataPlane | None = None,
        server_url: str | None = None,
    ) -> None:
        self.settings = settings or WorkerSettings()
        self.identity = identity or default_identity()
        self.task_queues = list(dict.fromkeys(task_queues))
        self.activities = activities = StageActivities(
            identity=self.identity, data_plane=data_plane, server_url=server_url
        )
        self._activities = activities
        if data_plane is not None and self.task_queues:
            # See engine/locality.py: stages whose inputs are here are offered here first.
            activities.direct_queue = f"stageflow.direct.{self.identity}.{uuid.uuid4().hex[:8]}"
            activities.serves = list(self.task_queues)
        direct = [activities.direct_queue] if activities.direct_queue else []
        grace = timedelta(seconds=self.settings.shutdown_grace)
        self._workers = [
            Worker(
                client,
                task_queue=queue,
                activities=[activities.run_stage],
                max_concurrent_activities=self.settings.concurrency,
                graceful_shutdown_timeout=grace,
                identity=self.identity,
            )
            for queue in [*self.task_queues, *direct]
        ]
        if workflows:
            self._workers.append(
                Worker(
                    client,
                    task_queue=WORKFLOW_TASK_QUEUE,
                    workflows=[PipelineWorkflow],
                    identity=self.identity,
                )
            )
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> StageWorker:
        self._tasks = [asyncio.create_task(worker.run()) for worker in self._workers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def running_stages(self) -> int:
        """Stages running in this process now."""
        return self._activities.running

    async def shutdown(self) -> None:
        """Stop polling, let running stages finish within the grace period, then return.

        Stages still running after the grace period are cancelled; Temporal retries them on
        another worker. Calling it again (or leaving the ``async with``) afterwards does nothing.
        """
        if not self._tasks:
            return
        await asyncio.gather(*(worker.shutdown() for worker in self._workers))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def wait(self) -> None:
        """Until every Temporal worker has stopped (normally: until ``shutdown``)."""
        await asyncio.gather(*self._tasks)
