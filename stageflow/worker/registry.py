"""The worker's entry in the control plane: its hardware and cost, its load, its state.

Why: Temporal knows which pollers exist but not what machine is behind them; the dashboard,
``stageflow workers`` and cost accounting need CPUs, memory, disk, GPUs and price per hour, and
a heartbeat to tell a live worker from a lost one (the server derives ``lost`` from 3 missed
heartbeats). States go ``alive`` → ``draining`` (SIGTERM: no new stages) → ``stopped``.

The control plane is optional to running stages, so nothing here is ever fatal: a failed
registration or heartbeat is logged once per outage and tried again at the next beat (a
heartbeat the server answers 404 to, for a worker it does not know, registers again).

GPUs come from NVML (``nvidia-ml-py``) when it is installed and a driver answers, else ``[]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import psutil

from stageflow.worker.control import ControlClient, ControlPlaneError

__all__ = [
    "GpuInfo",
    "Hardware",
    "WorkerRegistry",
    "WorkerState",
    "collect_hardware",
    "collect_load",
    "gpu_utilization",
]

WorkerState = Literal["alive", "draining", "stopped"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Hardware:
    cpus: int
    memory_bytes: int
    disk_bytes: int
    """Size of the filesystem holding the staging dir (where artifacts land)."""
    gpus: list[GpuInfo] = field(default_factory=list)


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None (not installed, or no driver/GPU)."""
    try:
        import pynvml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no usable GPU
        return None
    return pynvml


def _gpus() -> list[GpuInfo]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_bytes=int(memory.total),
                )
            )
        return found
    except Exception:
        log.warning("NVML answered but listing GPUs failed", exc_info=True)
        return []
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def gpu_utilization() -> list[float]:
    """Percent busy of each GPU, in index order ([] without NVML)."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        return [
            float(nvml.nvmlDeviceGetUtilizationRates(nvml.nvmlDeviceGetHandleByIndex(index)).gpu)
            for index in range(nvml.nvmlDeviceGetCount())
        ]
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the staging dir may not exist yet)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def collect_hardware(staging_dir: Path) -> Hardware:
    """What this machine offers stages."""
    return Hardware(
        cpus=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        memory_bytes=int(psutil.virtual_memory().total),
        disk_bytes=int(shutil.disk_usage(_existing(staging_dir)).total),
        gpus=_gpus(),
    )


def collect_load(
    staging_dir: Path, running_stages: int, *, cpu_interval: float | None = None
) -> dict[str, Any]:
    """The heartbeat's ``load``: CPU and memory percent, running stages, free disk, GPU use.

    ``cpu_percent`` is the machine's CPU use since the previous call, or over ``cpu_interval``
    seconds (blocking) when given: a process's first reading has nothing to compare with.
    """
    return {
        "cpu_percent": float(psutil.cpu_percent(interval=cpu_interval)),
        "memory_percent": float(psutil.virtual_memory().percent),
        "running_stages": running_stages,
        "disk_free_bytes": int(shutil.disk_usage(_existing(staging_dir)).free),
        "gpu_util": gpu_utilization(),
    }


class WorkerRegistry:
    """Registers this worker with the control plane and heartbeats until stopped."""

    def __init__(
        self,
        *,
        client: ControlClient,
        worker_id: str,
        queues: Sequence[str],
        tags: Sequence[str],
        data_url: str | None,
        staging_dir: Path,
        cost_per_hour: float | None = None,
        interval: float = 5.0,
        running_stages: Callable[[], int] = lambda: 0,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.queues = list(queues)
        self.tags = list(tags)
        self.data_url = data_url
        self.staging_dir = Path(staging_dir)
        self.cost_per_hour = cost_per_hour
        self.interval = interval
        self.running_stages = running_stages
        self.state: WorkerState = "alive"
        self.hardware: Hardware | None = None
        self.registered = False
        self._failing = False
        self._measured = False
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def registration(self) -> dict[str, Any]:
        """The body of ``POST /api/v1/workers/register``."""
        hardware = self.hardware or collect_hardware(self.staging_dir)
        return {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "queues": self.queues,
            "tags": self.tags,
            "cpus": hardware.cpus,
            "memory_bytes": hardware.memory_bytes,
            "disk_bytes": hardware.disk_bytes,
            "gpus": [asdict(gpu) for gpu in hardware.gpus],
            "cost_per_hour": self.cost_per_hour,
            "data_url": self.data_url,
        }

    def heartbeat(self) -> dict[str, Any]:
        """The body of ``POST /api/v1/workers/{id}/heartbeat`` (blocks ~0.2 s the first time)."""
        first, self._measured = not self._measured, True
        load = collect_load(
            self.staging_dir, self.running_stages(), cpu_interval=0.2 if first else None
        )
        return {"state": self.state, "load": load}

    async def start(self) -> None:
        """Collect the hardware, then register and heartbeat in the background."""
        self.hardware = await asyncio.to_thread(collect_hardware, self.staging_dir)
        self._task = asyncio.create_task(self._run(), name="stageflow-worker-heartbeat")

    async def set_state(self, state: WorkerState, *, timeout: float = 5.0) -> bool:
        """Change state and tell the server at once (True if it heard within ``timeout``)."""
        self.state = state
        try:
            return await asyncio.wait_for(self._beat(), timeout)
        except TimeoutError:
            return False

    async def stop(self, *, timeout: float = 5.0) -> bool:
        """Report ``stopped`` (best effort within ``timeout``) and stop heartbeating."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return await self.set_state("stopped", timeout=timeout)

    async def _run(self) -> None:
        while True:
            await self._beat()
            await asyncio.sleep(self.interval)

    async def _beat(self) -> bool:
        """Register if need be, then heartbeat; failures are logged, never raised."""
        async with self._send_lock:
            try:
                if not self.registered:
                    await self.client.post("/api/v1/workers/register", self.registration())
                    self.registered = True
                try:
                    await self._post_heartbeat()
                except ControlPlaneError as exc:
                    if exc.status != 404:
                        raise
                    # The server does not know us (a fresh control DB): introduce ourselves.
                    await self.client.post("/api/v1/workers/register", self.registration())
                    await self._post_heartbeat()
            except ControlPlaneError as exc:
                if not self._failing:
                    log.warning("worker registry: %s; retrying every %gs", exc, self.interval)
                    self._failing = True
                return False
            if self._failing:
                log.warning("worker registry: the control plane is reachable again")
                self._failing = False
            return True

    async def _post_heartbeat(self) -> None:
        body = await asyncio.to_thread(self.heartbeat)
        path = f"/api/v1/workers/{quote(self.worker_id, safe='')}/heartbeat"
        await self.client.post(path, body)
