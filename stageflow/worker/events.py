"""Stage attempt events (started, succeeded, failed, cancelled) sent to the control plane.

They feed the server's stage timings, retry and transfer metrics and artifact catalog. Sending
must never slow a stage down or fail it: ``report`` only appends to a bounded queue, and a
background task posts batches, retrying through outages; when the queue is full the oldest
events are dropped and counted (Temporal, not this stream, is the record of what ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

from stageflow.worker.control import ControlClient, ControlPlaneError

__all__ = ["EventReporter"]

log = logging.getLogger(__name__)


class EventReporter:
    def __init__(self, client: ControlClient, *, capacity: int = 10_000, interval: float = 0.5):
        self.client = client
        self.interval = interval
        self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._task: asyncio.Task[None] | None = None

    def report(self, **event: Any) -> None:
        """Queue one event (``run_id``, ``stage``, ``instance``, ``attempt``, ``status`` …)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        event.setdefault("at", datetime.now(UTC).isoformat())
        self._queue.append(event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``), then stop. Never raises: events are a
        best-effort feed, and a worker's shutdown must not fail over them."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self._send_all(), timeout)
        except (TimeoutError, ControlPlaneError) as exc:
            log.warning("%d stage events not sent at shutdown: %s", len(self._queue), exc)

    async def _run(self) -> None:
        backoff = self.interval
        while True:
            await asyncio.sleep(backoff)
            try:
                await self._send_all()
                backoff = self.interval
            except ControlPlaneError as exc:
                log.warning("stage events not sent yet (%s); retrying", exc)
                backoff = min(backoff * 2, 30.0)

    async def _send_all(self) -> None:
        while self._queue:
            batch = [self._queue[i] for i in range(min(len(self._queue), 500))]
            try:
                await self.client.post("/api/v1/events", {"events": batch})
            except ControlPlaneError as exc:
                if not exc.rejected and exc.status != 404:
                    raise
                log.warning("the control plane refused %d stage events: %s", len(batch), exc)
            for _ in batch:
                self._queue.popleft()
