"""Pipelines on a cron: Temporal Schedules created, listed, triggered and deleted."""

from __future__ import annotations

import uuid

from helpers import fn, wait_until
from temporalio.client import Client

from stageflow.engine import runs, schedules
from stageflow.spec.model import Pipeline
from stageflow.worker.runner import StageWorker


async def test_schedule_lifecycle_and_a_triggered_run(client: Client, queue: str) -> None:
    name = f"nightly{uuid.uuid4().hex[:6]}"
    spec = Pipeline.model_validate(
        {
            "name": name,
            "schedule": "0 6 * * *",
            "params": {"n": 2},
            "stages": {
                "make": {
                    "uses": "python",
                    "queue": queue,
                    "with": {"function": fn("numbers"), "count": "${params.n}"},
                }
            },
        }
    )
    sid, created = await schedules.apply_schedule(client, spec, heartbeat_timeout=5)
    assert created and sid == f"stageflow-{name}"
    _, created_again = await schedules.apply_schedule(
        client, spec.with_params({"n": 3}), heartbeat_timeout=5
    )
    assert not created_again
    listed = {entry.schedule_id: entry for entry in await schedules.list_schedules(client)}
    assert listed[sid].cron == "0 6 * * *"
    assert listed[sid].next_runs and all(
        t.hour == 6 and t.minute == 0 for t in listed[sid].next_runs
    )

    async with StageWorker(client, task_queues=[queue]):
        await schedules.trigger_schedule(client, name)

        async def finished_run() -> list[runs.RunInfo]:
            found = await runs.list_runs(client, pipeline=name)
            return [info for info in found if info.status == "succeeded"]

        await wait_until(finished_run, timeout=60, interval=0.3)
        (info,) = await finished_run()
        state = await runs.run_state(client, info.run_id)
    assert info.run_id.startswith(f"{name}-scheduled")
    assert state.run_id == info.run_id
    # The update took effect: the triggered run used n=3.
    assert state.stages["make"].outputs == {"numbers": [1, 2, 3]}

    await schedules.delete_schedule(client, name)
    assert sid not in {entry.schedule_id for entry in await schedules.list_schedules(client)}
