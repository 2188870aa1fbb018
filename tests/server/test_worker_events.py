"""A worker reporting to the control plane posts attempt events that feed run metrics."""

from __future__ import annotations

from pathlib import Path

from conftest import ADMIN, Api
from helpers import finish, fn, pipeline, start, wait_until
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from stageflow.settings import WorkerSettings
from stageflow.worker.lifecycle import WorkerLifecycle
from stageflow.worker.runner import StageWorker


async def test_attempt_events_reach_the_server(
    api: Api, client: Client, queue: str, tmp_path: Path
) -> None:
    settings = WorkerSettings(server_url=api.url, heartbeat_interval=1.0)
    lifecycle = WorkerLifecycle(
        worker_id=f"events-{queue}",
        queues=[queue],
        tags=[],
        staging_dir=tmp_path / "staging",
        data_url=None,
        token=ADMIN,
        settings=settings,
    )
    spec = pipeline(
        {
            "flaky": {
                "uses": "python",
                "queue": queue,
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
                "with": {"function": fn("flaky"), "log_dir": str(tmp_path), "failures": 1},
            },
            "fan": {
                "uses": "python",
                "queue": queue,
                "matrix": {"x": [1, 2, 3]},
                "with": {"function": fn("multiply"), "x": "${matrix.x}", "y": 2},
            },
        }
    )
    async with api.client() as http:
        before = _samples((await http.get("/metrics")).text)
        stage_worker = StageWorker(client, task_queues=[queue], settings=settings)
        async with lifecycle, stage_worker:
            stage_worker.activities.events = lifecycle.events
            run_id = await start(client, spec)
            state = await finish(client, run_id)
        assert state.status == "succeeded"

        async def grown() -> dict[tuple[str, str], float] | None:
            now = _samples((await http.get("/metrics")).text)
            delta = {key: value - before.get(key, 0.0) for key, value in now.items()}
            return delta if delta.get(("stageflow_stage_events_total", "started"), 0) >= 5 else None

        await wait_until(grown, timeout=30, interval=0.3)
        delta = await grown()
    assert delta is not None
    # 2 attempts of `flaky` (the first fails), 3 instances of `fan`: all reported.
    assert delta[("stageflow_stage_events_total", "started")] == 5
    assert delta[("stageflow_stage_events_total", "succeeded")] == 4
    assert delta[("stageflow_stage_events_total", "failed")] == 1
    assert delta[("stageflow_stage_retries_total", "")] == 1
    durations = sum(
        v for (name, _), v in delta.items() if name == "stageflow_stage_duration_seconds_count"
    )
    assert durations == 5


def _samples(text: str) -> dict[tuple[str, str], float]:
    """Prometheus samples by (name, status label), summed over other labels."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("status", ""))
            found[key] = found.get(key, 0.0) + sample.value
    return found
