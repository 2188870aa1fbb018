"""The run index: runs started elsewhere show up, and closed runs read without a worker."""

from __future__ import annotations

import httpx
from api_helpers import wait_run
from helpers import fn, pipeline, start
from temporalio.client import Client

from stageflow.worker.runner import StageWorker


async def test_runs_started_elsewhere_are_listed_and_shown(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str
) -> None:
    spec = pipeline({"a": {"uses": "python", "queue": queue, "with": {"function": fn("whoami")}}})
    spec = spec.model_copy(update={"name": unique})
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec)  # straight to Temporal, as the CLI does
        run = await wait_run(http, run_id)
    assert run["status"] == "succeeded" and run["pipeline"] == unique
    listed = (await http.get("/api/v1/runs", params={"pipeline": unique})).json()["runs"]
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "succeeded")]
    # No worker serves the workflow queue now: the closed run is read from the index's snapshot.
    stages = await http.get(f"/api/v1/runs/{run_id}/stages")
    assert stages.status_code == 200 and stages.json()["stages"][0]["status"] == "succeeded"
