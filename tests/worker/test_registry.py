"""Worker registration and heartbeats against a real HTTP control plane, with real figures."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from control_plane import FakeControlPlane
from helpers import TOKEN, wait_until

from stageflow.worker.control import ControlClient
from stageflow.worker.registry import WorkerRegistry, collect_hardware, collect_load


def nvml_gpu_count() -> int:
    """GPUs as NVML sees them, asked independently of the code under test (0 without NVML)."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except Exception:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture
async def server() -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane(TOKEN)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


def registry_for(
    url: str, staging: Path, running: list[int]
) -> tuple[WorkerRegistry, ControlClient]:
    client = ControlClient(url, token=TOKEN)
    registry = WorkerRegistry(
        client=client,
        worker_id="host-a:123",
        queues=["ml"],
        tags=["gpu", "a100"],
        data_url="http://10.0.0.5:9000",
        staging_dir=staging,
        cost_per_hour=2.5,
        interval=0.1,
        running_stages=lambda: running[0],
    )
    return registry, client


def test_hardware_is_this_machine(tmp_path: Path) -> None:
    hardware = collect_hardware(tmp_path / "staging-not-created-yet")
    assert hardware.cpus == psutil.cpu_count(logical=True)
    assert hardware.memory_bytes == psutil.virtual_memory().total
    assert hardware.disk_bytes == shutil.disk_usage(tmp_path).total
    assert len(hardware.gpus) == nvml_gpu_count()
    for index, gpu in enumerate(hardware.gpus):
        assert gpu.index == index and gpu.memory_bytes > 0 and gpu.name


def test_load_figures_are_in_range(tmp_path: Path) -> None:
    load = collect_load(tmp_path, running_stages=3)
    assert set(load) == {
        "cpu_percent",
        "memory_percent",
        "running_stages",
        "disk_free_bytes",
        "gpu_util",
    }
    assert 0 <= load["cpu_percent"] <= 100
    assert 0 < load["memory_percent"] <= 100
    assert load["running_stages"] == 3
    assert 0 < load["disk_free_bytes"] <= shutil.disk_usage(tmp_path).total
    assert len(load["gpu_util"]) == nvml_gpu_count()


async def test_registers_then_heartbeats_through_its_states(
    server: FakeControlPlane, tmp_path: Path
) -> None:
    running = [0]
    registry, client = registry_for(server.url, tmp_path, running)
    await registry.start()
    await wait_until(lambda: len(server.heartbeats) >= 3)
    running[0] = 2
    await wait_until(lambda: server.heartbeats[-1][1]["load"]["running_stages"] == 2)
    assert await registry.set_state("draining")
    await wait_until(lambda: len(server.heartbeats) >= 8)  # keeps beating while draining
    assert await registry.stop()
    await client.aclose()

    (registration,) = server.registrations
    assert registration == {
        "worker_id": "host-a:123",
        "host": registration["host"],
        "queues": ["ml"],
        "tags": ["gpu", "a100"],
        "cpus": psutil.cpu_count(logical=True),
        "memory_bytes": psutil.virtual_memory().total,
        "disk_bytes": shutil.disk_usage(tmp_path).total,
        "gpus": registration["gpus"],
        "cost_per_hour": 2.5,
        "data_url": "http://10.0.0.5:9000",
    }
    assert len(registration["gpus"]) == nvml_gpu_count()
    assert server.states("host-a:123") == ["alive", "draining", "stopped"]
    for _, body in server.heartbeats:
        load = body["load"]
        assert 0 <= load["cpu_percent"] <= 100 and 0 < load["memory_percent"] <= 100
        assert load["disk_free_bytes"] > 0
    assert server.heartbeats[-1][1]["state"] == "stopped"


async def test_outages_are_survived_and_a_forgetful_server_gets_a_new_registration(
    tmp_path: Path,
) -> None:
    server = FakeControlPlane(TOKEN)
    await server.start()
    await server.stop()  # down from the start
    registry, client = registry_for(server.url, tmp_path, [1])
    await registry.start()  # does not raise
    assert await registry.set_state("alive") is False
    assert not registry.registered

    await server.start()
    try:
        await wait_until(lambda: len(server.heartbeats) >= 2)
        assert len(server.registrations) == 1

        server.forget_workers()  # as a server with a fresh database: heartbeats get 404
        count = len(server.heartbeats)
        await wait_until(lambda: len(server.registrations) == 2 and len(server.heartbeats) > count)
        await server.stop()
        count = len(server.heartbeats)
        assert await registry.set_state("draining") is False  # down again: no error, no beat
        await server.start()
        await wait_until(lambda: server.states("host-a:123")[-1] == "draining")
        assert await registry.stop()
    finally:
        await server.stop()
        await client.aclose()
    assert server.states("host-a:123")[-2:] == ["draining", "stopped"]
    assert len(server.heartbeats) > count
