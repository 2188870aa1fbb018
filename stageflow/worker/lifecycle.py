"""Around a worker's Temporal workers: log capture, shipping, registration and the drain.

Why one place: the order matters and is easy to get wrong.

* Start: the capture goes in first, so nothing a stage prints is missed; then the shipper
  (which also picks up the spool an earlier, killed run left) and the registration.
* Stop (SIGTERM/SIGINT): report ``draining``; stop polling and give running stages the grace
  period (``StageWorker.shutdown``; stages still running after it are cancelled, and since they
  heartbeat, Temporal retries them elsewhere at once); report ``stopped``; ship the last lines
  within ``log_flush_timeout`` (the rest stays spooled for the next start); remove the capture.

Without a control plane URL the capture still runs (for ``STAGEFLOW_LOG_FORMAT=json``), and
nothing is shipped or registered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from stageflow.errors import ConfigError
from stageflow.settings import WorkerSettings
from stageflow.worker.control import ControlClient
from stageflow.worker.events import EventReporter
from stageflow.worker.jsonlog import json_sink
from stageflow.worker.logcapture import LogCapture
from stageflow.worker.registry import WorkerRegistry
from stageflow.worker.runner import StageWorker
from stageflow.worker.shipper import LogShipper

__all__ = ["SPOOL_DIR_NAME", "WorkerLifecycle"]

SPOOL_DIR_NAME = "logspool"
"""The shipper's spool, under the worker's staging dir."""

log = logging.getLogger(__name__)


class WorkerLifecycle:
    """``async with`` around a worker's life; ``drain`` is the graceful half of stopping."""

    def __init__(
        self,
        *,
        worker_id: str,
        queues: Sequence[str],
        tags: Sequence[str],
        staging_dir: Path,
        data_url: str | None,
        token: str | None,
        settings: WorkerSettings | None = None,
        log_format: str = "text",
        running_stages: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings or WorkerSettings()
        self.worker_id = worker_id
        self.queues = list(queues)
        self.tags = list(tags)
        self.staging_dir = Path(staging_dir)
        self.data_url = data_url
        self.token = token
        self.running_stages = running_stages
        self.capture = LogCapture(echo=log_format != "json")
        if log_format == "json":
            self.capture.add_sink(json_sink(sys.stderr, self.capture.stream_id))
        self.client: ControlClient | None = None
        self.shipper: LogShipper | None = None
        self.registry: WorkerRegistry | None = None
        self.events: EventReporter | None = None
        """Stage attempt events for the control plane (with a server; give it to the worker)."""

    @property
    def server_url(self) -> str | None:
        return self.settings.server_url

    async def __aenter__(self) -> WorkerLifecycle:
        self.capture.install()
        try:
            if self.server_url:
                await self._connect(self.server_url)
        except BaseException:
            self.capture.uninstall()
            raise
        return self

    async def _connect(self, server_url: str) -> None:
        if not self.token:
            raise ConfigError("reporting to the control plane needs the deployment token")
        self.client = ControlClient(server_url, token=self.token)
        self.shipper = LogShipper(
            client=self.client,
            worker=self.worker_id,
            stream_id=self.capture.stream_id,
            spool_dir=self.staging_dir / SPOOL_DIR_NAME,
            flush_interval=self.settings.log_flush_interval,
            max_queue_lines=self.settings.log_queue_lines,
            max_spool_bytes=self.settings.log_spool_max_bytes,
        )
        await self.shipper.start()
        self.capture.add_sink(self.shipper.submit)
        self.registry = WorkerRegistry(
            client=self.client,
            worker_id=self.worker_id,
            queues=self.queues,
            tags=self.tags,
            data_url=self.data_url,
            staging_dir=self.staging_dir,
            cost_per_hour=self.settings.cost_per_hour,
            interval=self.settings.heartbeat_interval,
            running_stages=self.running_stages,
        )
        await self.registry.start()
        self.events = EventReporter(self.client)
        self.events.start()

    async def drain(self, worker: StageWorker) -> None:
        """Report ``draining``, then stop ``worker`` gracefully (see ``StageWorker.shutdown``)."""
        if self.registry is not None:
            await self.registry.set_state("draining")
        await worker.shutdown()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.registry is not None:
                await self.registry.stop()
            if self.events is not None:
                await self.events.close(self.settings.log_flush_timeout)
            if self.shipper is not None:
                self.capture.remove_sink(self.shipper.submit)
                await self.shipper.close(self.settings.log_flush_timeout)
            if self.client is not None:
                await self.client.aclose()
        finally:
            self.capture.uninstall()
