"""A worker killed with SIGKILL mid-stage: the stage resumes from its last checkpoint elsewhere."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from helpers import finish, start, wait_until
from steps import read_log
from temporalio.client import Client
from worker_processes import WorkerProcesses

from stageflow.engine import runs
from stageflow.spec.model import Pipeline
from stageflow.worker.runner import StageWorker

TESTS = Path(__file__).resolve().parent.parent


async def test_sigkilled_worker_stage_resumes_from_checkpoint_on_another(
    client: Client, queue: str, log_dir: Path, worker_processes: WorkerProcesses
) -> None:
    steps = 30
    spec = Pipeline.model_validate(
        {
            "name": "t",
            "stages": {
                "long": {
                    "uses": "python",
                    "queue": queue,
                    "heartbeat_timeout": "2s",
                    "retry": {"max_attempts": 3, "initial_interval": "200ms"},
                    "with": {
                        "function": "steps:counted_steps",
                        "log_dir": str(log_dir),
                        "steps": steps,
                        "delay": 0.2,
                    },
                }
            },
        }
    )
    first = worker_processes.spawn(queue, name="first")
    async with StageWorker(client, task_queues=[]):  # the workflow itself runs here
        run_id = await start(client, spec)
        await wait_until(lambda: len(read_log(log_dir, "counted")) >= 8, timeout=60)
        await asyncio.sleep(1.0)  # let a heartbeat carry a recent checkpoint
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before_kill = len(read_log(log_dir, "counted"))
        second = worker_processes.spawn(queue, name="second")
        state = await finish(client, run_id, timeout=90)
        live = await runs.live_activities(client, run_id)
    assert state.status == "succeeded", state.stages["long"].error
    outputs = state.stages["long"].outputs
    assert outputs["pid"] == second.pid
    assert outputs["attempt"] == 2
    # It resumed from a checkpoint close to where the first worker was killed, not from 0.
    assert 0 < outputs["resumed_from"] <= done_before_kill
    # Temporal sends heartbeats at most every 0.8 x heartbeat_timeout: at most that much is redone.
    assert done_before_kill - outputs["resumed_from"] <= 0.8 * 2.0 / 0.2 + 1
    records = read_log(log_dir, "counted")
    by_second = [r["step"] for r in records if r["pid"] == second.pid]
    assert by_second == list(range(outputs["resumed_from"], steps))
    assert {r["pid"] for r in records} == {first.pid, second.pid}
    assert live == {}
