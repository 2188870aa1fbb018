"""Small steps the API tests share: register a pipeline, start a run, wait for a status."""

from __future__ import annotations

from typing import Any

import httpx
from helpers import wait_until

__all__ = ["register", "run_status", "stage_status", "start", "wait_run", "wait_stage"]


async def register(
    http: httpx.AsyncClient, name: str, stages: dict[str, Any], **extra: Any
) -> None:
    answer = await http.post("/api/v1/pipelines", json={"name": name, "stages": stages, **extra})
    assert answer.status_code in (200, 201), answer.text


async def start(http: httpx.AsyncClient, name: str, **body: Any) -> str:
    answer = await http.post(f"/api/v1/pipelines/{name}/runs", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["run_id"])


async def run_status(http: httpx.AsyncClient, run_id: str) -> str:
    answer = await http.get(f"/api/v1/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


async def stage_status(http: httpx.AsyncClient, run_id: str, stage: str) -> str:
    answer = await http.get(f"/api/v1/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["stages"][stage]["status"])


async def wait_run(
    http: httpx.AsyncClient, run_id: str, *statuses: str, timeout: float = 60
) -> dict[str, Any]:
    """Wait until the run is in one of ``statuses`` (default: any end) and return it."""
    wanted = set(statuses or ("succeeded", "failed", "cancelled", "terminated", "timed_out"))

    async def reached() -> bool:
        return await run_status(http, run_id) in wanted

    await wait_until(reached, timeout=timeout, interval=0.1)
    return dict((await http.get(f"/api/v1/runs/{run_id}")).json())


async def wait_stage(
    http: httpx.AsyncClient, run_id: str, stage: str, status: str, timeout: float = 30
) -> None:
    async def reached() -> bool:
        return await stage_status(http, run_id, stage) == status

    await wait_until(reached, timeout=timeout, interval=0.1)
