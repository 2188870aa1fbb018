"""Metrics after a real run: Prometheus's /metrics and a run's own /runs/{id}/metrics."""

from __future__ import annotations

import httpx
from api_helpers import register, start, wait_run
from helpers import fn
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from stageflow.worker.runner import StageWorker


async def test_metrics_after_a_run(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str
) -> None:
    await register(
        http,
        unique,
        {
            "a": {"uses": "python", "queue": queue, "with": {"function": fn("whoami")}},
            "b": {
                "uses": "python",
                "queue": queue,
                "needs": ["a"],
                "with": {"function": fn("numbers"), "count": 2},
            },
        },
    )
    await http.post(
        "/api/v1/workers/register", json={"worker_id": unique, "host": "h", "queues": [queue]}
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        assert (await wait_run(http, run_id))["status"] == "succeeded"
    # What a worker reports about the run (the worker process posts these).
    events = [
        {
            "run_id": run_id,
            "stage": "a",
            "attempt": 1,
            "status": "started",
            "at": "2026-01-01T00:00:00Z",
        },
        {
            "run_id": run_id,
            "stage": "a",
            "attempt": 1,
            "status": "metrics",
            "at": "2026-01-01T00:00:01Z",
            "detail": {"loss": 0.25, "epoch": 1},
        },
        {
            "run_id": run_id,
            "stage": "a",
            "attempt": 1,
            "status": "succeeded",
            "at": "2026-01-01T00:00:02Z",
            "detail": {"bytes": 4096, "seconds": 2.0},
        },
    ]
    assert (await http.post("/api/v1/events", json={"events": events})).status_code == 200

    text = (await http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("stageflow_runs", (("status", "succeeded"),))] >= 1
    assert samples[("stageflow_workers", (("state", "alive"),))] >= 1
    backlog = ("stageflow_queue_backlog", (("queue", queue), ("type", "activity")))
    assert samples[backlog] == 0  # Temporal answered for the worker's queue: nothing waiting
    assert samples[("stageflow_stage_duration_seconds_count", (("status", "succeeded"),))] >= 1
    assert samples[("stageflow_transfer_bytes_total", ())] >= 4096

    run = (await http.get(f"/api/v1/runs/{run_id}/metrics")).json()
    assert run["status"] == "succeeded" and run["attempts"] == 2
    assert [s["stage"] for s in run["stages"]] == ["a", "b"]
    assert all(s["duration_s"] is not None for s in run["stages"])
    assert run["transfer_bytes"] == 4096 and run["stages"][0]["transfer_bytes"] == 4096
    assert run["metrics"][0]["values"] == {"loss": 0.25, "epoch": 1}
    assert (await http.get("/api/v1/runs/nope/metrics")).status_code == 404
