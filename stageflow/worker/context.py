"""``StageContext``: what a running stage knows and can tell the engine.

Checkpoints and progress ride on Temporal activity heartbeats. The last checkpoint of a failed
or lost attempt comes back in the next attempt's ``activity.info().heartbeat_details``, on
whichever worker takes it, so ``ctx.resume_state()`` continues where the last attempt stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import activity

from stageflow.worker.logcapture import StageKey

if TYPE_CHECKING:
    from stageflow.worker.dataplane import DataPlane

__all__ = ["Progress", "StageContext"]

_NO_CHECKPOINT = object()


@dataclass
class Progress:
    done: float
    total: float | None = None
    unit: str = "items"
    updated: float = field(default_factory=time.time)


class StageContext:
    """Handed to executors (and to ``python`` functions that take a ``ctx`` parameter)."""

    def __init__(
        self,
        *,
        run_id: str,
        pipeline: str,
        stage: str,
        attempt: int,
        instance: int | None = None,
        matrix: Mapping[str, Any] | None = None,
        worker: str = "",
        previous_details: Any = None,
        data_plane: DataPlane | None = None,
        server_url: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.stage = stage
        self.attempt = attempt
        self.instance = instance
        self.matrix = dict(matrix or {})
        self.worker = worker
        self._data_plane = data_plane
        self.server_url = server_url
        """The data server persisted artifacts go to (None when there is none)."""
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._checkpoint: Any = _NO_CHECKPOINT
        self._progress: Progress | None = None
        if isinstance(previous_details, dict) and "checkpoint" in previous_details:
            self._checkpoint = previous_details["checkpoint"]
        self.key = StageKey(run_id=run_id, stage=stage, instance=instance, attempt=attempt)
        """Which stage attempt this is, as the log capture tags its lines."""
        where = self.key.name
        self.name = where
        """``stage`` or ``stage[i]`` for a matrix instance."""
        # ``stage_key`` lets the capture attribute a record even when it is logged from a thread
        # the stage started without its context (see worker/logcapture.py).
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"stageflow.stage.{stage}"),
            {"run_id": run_id, "stage": where, "attempt": attempt, "stage_key": self.key},
        )

    @property
    def stage_id(self) -> str:
        """``run/stage`` or ``run/stage[i]`` for a matrix instance: unique within a run."""
        suffix = "" if self.instance is None else f"[{self.instance}]"
        return f"{self.run_id}/{self.stage}{suffix}"

    # ------------------------------------------------------------------ artifacts
    def output_dir(self) -> Path:
        """A directory on this worker for files the stage will publish with ``artifact``."""
        return self._data().work_dir(self.run_id, self.name)

    def artifact(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Publish a file or directory: returns its ref, to return among the stage's outputs.

        The data is hashed into this worker's store (hard links, no copy) and must not change
        afterwards. From an ``async`` stage use ``await ctx.publish(path)``, which hashes in a
        thread so heartbeats keep flowing.
        """
        if self._loop is not None and _on_loop(self._loop):
            raise RuntimeError(
                "ctx.artifact() would block the event loop: use `await ctx.publish()`"
            )
        return self._data().publish(Path(path), name)

    async def publish(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """``artifact`` for async stages."""
        return await asyncio.to_thread(self._data().publish, Path(path), name)

    @property
    def data_plane(self) -> DataPlane:
        """This worker's store and transfers (for executors that move data themselves)."""
        return self._data()

    def _data(self) -> DataPlane:
        if self._data_plane is None:
            raise RuntimeError("this worker has no data plane: artifacts need `stageflow worker`")
        return self._data_plane

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, state: Any) -> None:
        """Record ``state`` (small JSON) as the point a retry resumes from; sent at once."""
        self._checkpoint = state
        self._send()

    def resume_state(self) -> Any | None:
        """The last checkpoint of this stage instance, from this or an earlier attempt."""
        return None if self._checkpoint is _NO_CHECKPOINT else self._checkpoint

    def progress(self, done: float, total: float | None = None, unit: str = "items") -> None:
        """Report progress; shown live by ``stageflow run`` and the dashboard."""
        self._progress = Progress(done, total, unit)
        self._send()

    def heartbeat_details(self) -> dict[str, Any]:
        """The payload of the next heartbeat: last checkpoint (if any) and progress."""
        details: dict[str, Any] = {}
        if self._checkpoint is not _NO_CHECKPOINT:
            details["checkpoint"] = self._checkpoint
        if self._progress is not None:
            p = self._progress
            details["progress"] = {"done": p.done, "total": p.total, "unit": p.unit}
        return details

    def _send(self) -> None:
        """Heartbeat now. Temporal throttles and always delivers the latest details.

        Sync stage functions run in a thread; heartbeats must be sent from the event loop, so
        from a thread the call is handed to the loop (with the thread's copy of the activity
        context, which ``asyncio.to_thread`` took from the activity).
        """
        if self._loop is None or not activity.in_activity():
            return
        details = self.heartbeat_details()
        if _on_loop(self._loop):
            activity.heartbeat(details)
        elif not self._loop.is_closed():
            context = contextvars.copy_context()
            self._loop.call_soon_threadsafe(activity.heartbeat, details, context=context)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
