"""Stages run where their inputs already are when a worker there can take them."""

from __future__ import annotations

from pathlib import Path

from helpers import TOKEN, finish, fn, pipeline, start
from temporalio.client import Client

from stageflow.settings import WorkerSettings
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker


def _spec(queue: str, instances: int, seconds: float) -> object:
    return pipeline(
        {
            "make": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("write_blob"), "size": 300_000},
            },
            "use": {
                "uses": "python",
                "queue": queue,
                "needs": ["make"],
                "matrix": {"i": list(range(instances))},
                "with": {
                    "function": fn("read_blob"),
                    "blob": "${make.outputs.blob}",
                    "seconds": seconds,
                },
            },
        }
    )


async def _two_workers(client: Client, address: str, queue: str, tmp_path: Path, concurrency: int):
    planes = [DataPlane(store=ContentStore(tmp_path / name), token=TOKEN) for name in ("w1", "w2")]
    for plane in planes:
        await plane.start()
    other = await Client.connect(address)  # one worker per task queue per client
    settings = WorkerSettings(concurrency=concurrency)
    workers = [
        StageWorker(
            client, task_queues=[queue], identity="w1", data_plane=planes[0], settings=settings
        ),
        StageWorker(
            other,
            task_queues=[queue],
            identity="w2",
            data_plane=planes[1],
            settings=settings,
            workflows=False,
        ),
    ]
    return planes, workers


async def test_consumers_run_on_the_worker_holding_their_input(
    client: Client, temporal_address: str, queue: str, tmp_path: Path
) -> None:
    planes, workers = await _two_workers(client, temporal_address, queue, tmp_path, concurrency=20)
    try:
        async with workers[0], workers[1]:
            state = await finish(client, await start(client, _spec(queue, 8, 0.0)))
    finally:
        for plane in planes:
            await plane.stop()
    assert state.status == "succeeded"
    producer = state.stages["make"].outputs["worker"]
    digest = state.stages["make"].outputs["blob"]["sha256"]
    assert {out["worker"] for out in state.stages["use"].outputs} == {producer}
    assert {out["sha256"] for out in state.stages["use"].outputs} == {digest}


async def test_a_busy_holder_hands_stages_to_other_workers(
    client: Client, temporal_address: str, queue: str, tmp_path: Path
) -> None:
    planes, workers = await _two_workers(client, temporal_address, queue, tmp_path, concurrency=1)
    try:
        async with workers[0], workers[1]:
            state = await finish(client, await start(client, _spec(queue, 4, 4.0)), timeout=90)
    finally:
        for plane in planes:
            await plane.stop()
    assert state.status == "succeeded", state.stages["use"].error
    producer = state.stages["make"].outputs["worker"]
    digest = state.stages["make"].outputs["blob"]["sha256"]
    ran_on = [out["worker"] for out in state.stages["use"].outputs]
    assert producer in ran_on and set(ran_on) == {"w1", "w2"}
    # Those that ran elsewhere fetched a verified copy into that worker's own staging dir.
    for out in state.stages["use"].outputs:
        assert out["sha256"] == digest
        assert out["at"].startswith(str(tmp_path / out["worker"]))
    assert all(attempt == 1 for attempt in [state.stages["use"].attempts])
