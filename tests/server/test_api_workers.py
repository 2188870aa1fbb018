"""The worker registry through the API: register, heartbeat, and ``lost`` derived from silence."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import HEARTBEAT_INTERVAL
from helpers import wait_until


def registration(worker_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "host": "gpu-box-1",
        "queues": ["default", "ml"],
        "tags": ["gpu"],
        "cpus": 16,
        "memory_bytes": 64 << 30,
        "disk_bytes": 1 << 40,
        "gpus": [{"index": 0, "name": "A100", "memory_bytes": 80 << 30}],
        "cost_per_hour": 2.5,
        "data_url": "http://10.0.0.5:8765",
        **extra,
    }


async def worker(http: httpx.AsyncClient, worker_id: str) -> dict[str, Any]:
    answer = await http.get(f"/api/v1/workers/{worker_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_register_is_an_upsert(http: httpx.AsyncClient, unique: str) -> None:
    first = await http.post("/api/v1/workers/register", json=registration(unique))
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "alive" and first.json()["gpus"][0]["name"] == "A100"
    again = await http.post(
        "/api/v1/workers/register", json=registration(unique, tags=["gpu", "a100"])
    )
    assert again.json()["registered_at"] == first.json()["registered_at"]
    listed = (await http.get("/api/v1/workers")).json()
    mine = [w for w in listed["workers"] if w["worker_id"] == unique]
    assert len(mine) == 1 and mine[0]["tags"] == ["gpu", "a100"]
    assert listed["lost_after"] == 3 * HEARTBEAT_INTERVAL


async def test_heartbeats_carry_state_and_load(http: httpx.AsyncClient, unique: str) -> None:
    await http.post("/api/v1/workers/register", json=registration(unique))
    load = {
        "cpu_percent": 41.5,
        "memory_percent": 20.0,
        "running_stages": 3,
        "disk_free_bytes": 1 << 30,
        "gpu_util": [0.9],
    }
    beat = await http.post(
        f"/api/v1/workers/{unique}/heartbeat", json={"state": "draining", "load": load}
    )
    assert beat.status_code == 200, beat.text
    shown = await worker(http, unique)
    assert shown["state"] == shown["reported_state"] == "draining"
    assert shown["load"] == load
    unknown = await http.post(f"/api/v1/workers/{unique}-nope/heartbeat", json={})
    assert unknown.status_code == 404 and "register it" in unknown.json()["error"]
    bad = await http.post(f"/api/v1/workers/{unique}/heartbeat", json={"state": "sleepy"})
    assert bad.status_code == 422


async def test_a_silent_worker_is_lost_until_it_beats_again(
    http: httpx.AsyncClient, unique: str
) -> None:
    await http.post("/api/v1/workers/register", json=registration(unique))
    await http.post("/api/v1/workers/register", json=registration(f"{unique}-stopped"))
    await http.post(f"/api/v1/workers/{unique}-stopped/heartbeat", json={"state": "stopped"})

    async def lost() -> bool:
        found = (await http.get("/api/v1/workers", params={"state": "lost"})).json()
        return unique in [w["worker_id"] for w in found["workers"]]

    await wait_until(lost, timeout=30, interval=0.2)
    shown = await worker(http, unique)
    assert shown["reported_state"] == "alive"
    assert shown["seconds_since_heartbeat"] > 3 * HEARTBEAT_INTERVAL
    assert (await worker(http, f"{unique}-stopped"))["state"] == "stopped"  # stopped is not lost

    await http.post(f"/api/v1/workers/{unique}/heartbeat", json={"state": "alive"})
    assert (await worker(http, unique))["state"] == "alive"
