"""SIGTERM drains a `stageflow worker`: it reports draining, lets running stages finish within the
grace period (or hands them back to Temporal after it), reports stopped, ships its last lines,
and exits 0. Real worker processes, a real Temporal dev server, a real HTTP control plane."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from control_plane import FakeControlPlane
from helpers import TOKEN, finish, start, wait_until
from steps import read_log
from temporalio.client import Client
from worker_processes import WorkerProcesses

from stageflow.spec.model import Pipeline
from stageflow.worker.runner import StageWorker

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
async def control() -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane(TOKEN)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


@pytest.fixture
def spawn(worker_processes: WorkerProcesses, control: FakeControlPlane) -> Spawn:
    """`stageflow worker` processes reporting to ``control`` (heartbeats every 0.3 s)."""

    def spawn_worker(queue: str, identity: str, **env: str) -> subprocess.Popen[bytes]:
        return worker_processes.spawn(
            queue,
            name=identity,
            paths=[HERE],
            args=["--server", control.url, "--cost-per-hour", "1.25"],
            split_streams=True,
            **{"STAGEFLOW_WORKER_HEARTBEAT_INTERVAL": "0.3", **env},
        )

    return spawn_worker


async def exit_code(process: subprocess.Popen[bytes], timeout: float = 90) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)


def stage_spec(queue: str, stage: dict[str, Any]) -> Pipeline:
    return Pipeline.model_validate({"name": "t", "stages": {"work": {"queue": queue, **stage}}})


async def test_sigterm_lets_the_running_stage_finish_then_exits_0(
    client: Client, queue: str, log_dir: Path, control: FakeControlPlane, spawn: Spawn, tmp_path
) -> None:
    lines = 15
    spec = stage_spec(
        queue,
        {
            "uses": "python",
            "with": {
                "function": "log_steps:talk",
                "lines": lines,
                "delay": 0.2,
                "log_dir": str(log_dir),
            },
        },
    )
    worker = spawn(queue, "drained", STAGEFLOW_LOG_FORMAT="json")
    async with StageWorker(client, task_queues=[]):  # the workflow itself runs here
        run_id = await start(client, spec)
        await wait_until(lambda: len(read_log(log_dir, "talk")) >= 3, timeout=60)
        worker.send_signal(signal.SIGTERM)
        done_at_sigterm = len(read_log(log_dir, "talk"))
        assert await exit_code(worker) == 0
        state = await finish(client, run_id)

    # The stage was not cut short: it ran to its end on this worker, after the SIGTERM.
    assert state.status == "succeeded", state.stages["work"].error
    assert state.stages["work"].outputs == {"pid": worker.pid, "lines": lines}
    assert state.stages["work"].attempts == 1
    assert done_at_sigterm < lines == len(read_log(log_dir, "talk"))

    # The control plane saw the whole life: registration, alive → draining → stopped.
    (registration,) = control.registrations
    assert registration["worker_id"] == "drained"
    assert registration["queues"] == [queue] and registration["cost_per_hour"] == 1.25
    assert registration["cpus"] >= 1 and registration["data_url"].startswith("http://")
    assert control.states("drained") == ["alive", "draining", "stopped"]
    running = [body["load"]["running_stages"] for _, body in control.heartbeats]
    assert 1 in running and running[-1] == 0

    # Every line the stage printed or logged was shipped before the process exited.
    shipped = [line for line in control.lines if line["run_id"] == run_id]
    for stream, word in (("stdout", "out"), ("stderr", "err"), ("log", "log")):
        got = [line["message"] for line in shipped if line["stream"] == stream]
        assert got == [f"work {word} {i}" for i in range(lines)], stream
    assert {(line["stage"], line["attempt"], line["worker"]) for line in shipped} == {
        ("work", 1, "drained")
    }
    seqs = [line["seq"] for line in shipped]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # STAGEFLOW_LOG_FORMAT=json: the same lines, numbered alike, in the worker's own log.
    documents = []
    for raw in (tmp_path / "worker-drained.err").read_text().splitlines():
        try:
            documents.append(json.loads(raw))
        except ValueError:
            continue
    mine = [d for d in documents if d.get("run_id") == run_id and "seq" in d]
    assert [(d["seq"], d["message"]) for d in mine] == [
        (line["seq"], line["message"]) for line in shipped
    ]
    assert "work out 0" not in (tmp_path / "worker-drained.out").read_text()


async def test_a_stage_outlasting_the_grace_period_is_retried_on_another_worker(
    client: Client, queue: str, log_dir: Path, control: FakeControlPlane, spawn: Spawn
) -> None:
    steps = 40
    spec = stage_spec(
        queue,
        {
            "uses": "python",
            # Long: the retry must come from the worker handing the stage back, not from
            # Temporal noticing silence.
            "heartbeat_timeout": "60s",
            "retry": {"max_attempts": 3, "initial_interval": "200ms"},
            "with": {
                "function": "steps:counted_steps",  # sync: its thread cannot be interrupted
                "log_dir": str(log_dir),
                "steps": steps,
                "delay": 0.1,
            },
        },
    )
    first = spawn(queue, "first", STAGEFLOW_WORKER_SHUTDOWN_GRACE="1")
    async with StageWorker(client, task_queues=[]):
        run_id = await start(client, spec)
        await wait_until(lambda: len(read_log(log_dir, "counted")) >= 4, timeout=60)
        first.send_signal(signal.SIGTERM)
        # It exits although the stage's thread is still busy: the stage was handed back.
        assert await exit_code(first) == 0
        done_by_first = len(read_log(log_dir, "counted"))
        assert done_by_first < steps
        second = spawn(queue, "second")
        state = await finish(client, run_id, timeout=120)
        failures = [
            event.activity_task_started_event_attributes.last_failure.message
            async for event in client.get_workflow_handle(run_id).fetch_history_events()
            if event.HasField("activity_task_started_event_attributes")
        ]
    assert state.status == "succeeded", state.stages["work"].error
    outputs = state.stages["work"].outputs
    assert outputs["pid"] == second.pid and outputs["attempt"] == 2
    assert 0 < outputs["resumed_from"] <= done_by_first
    assert failures == ["Worker is shutting down and this activity did not complete in time"]
    assert control.states("first") == ["alive", "draining", "stopped"]
