"""Queue and tag routing: a tagged stage only ever runs on a worker carrying its tags."""

from __future__ import annotations

import asyncio

import pytest
from helpers import finish, fn, pipeline, start
from temporalio.client import Client

from stageflow.engine import runs
from stageflow.engine.routing import MAX_WORKER_TAGS, stage_task_queue, worker_task_queues
from stageflow.worker.runner import StageWorker, task_queues_for


def test_tagged_stage_queue_is_canonical() -> None:
    assert stage_task_queue("ml") == "ml"
    assert stage_task_queue("ml", ["gpu", "a100", "gpu"]) == "ml[a100,gpu]"


def test_worker_polls_every_subset_of_its_tags() -> None:
    queues = worker_task_queues("ml", ["gpu", "a100"])
    assert sorted(queues) == sorted(["ml", "ml[a100]", "ml[gpu]", "ml[a100,gpu]"])
    # Any stage whose tags the worker carries lands on a queue it polls; others do not.
    assert stage_task_queue("ml", ["a100", "gpu"]) in queues
    assert stage_task_queue("ml", ["gpu", "fast"]) not in queues
    assert stage_task_queue("default", ["gpu"]) not in queues


def test_worker_tag_count_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most"):
        worker_task_queues("q", [f"t{i}" for i in range(MAX_WORKER_TAGS + 1)])


def test_task_queues_for_several_queues_has_no_repeats() -> None:
    assert task_queues_for(["a", "b", "a"], ["x"]) == ["a", "a[x]", "b", "b[x]"]


async def test_tagged_stages_never_run_on_untagged_workers(
    client: Client, temporal_address: str, queue: str
) -> None:
    spec = pipeline(
        {
            "anywhere": {
                "uses": "python",
                "queue": queue,
                "matrix": {"i": list(range(12))},
                "with": {"function": fn("whoami")},
            },
            "gpu_only": {
                "uses": "python",
                "queue": queue,
                "tags": ["gpu"],
                "matrix": {"i": list(range(12))},
                "with": {"function": fn("whoami")},
            },
        }
    )
    # Temporal allows one worker per task queue per client: the "gpu" worker gets its own.
    other = await Client.connect(temporal_address)
    plain = StageWorker(client, task_queues=task_queues_for([queue], []), identity="plain")
    gpu = StageWorker(
        other, task_queues=task_queues_for([queue], ["gpu"]), identity="gpu", workflows=False
    )
    async with plain, gpu:
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded"
    assert {out["worker"] for out in state.stages["gpu_only"].outputs} == {"gpu"}
    assert state.stages["gpu_only"].task_queue == f"{queue}[gpu]"


async def test_tagged_stage_waits_until_a_worker_with_its_tags_comes(
    client: Client, temporal_address: str, queue: str
) -> None:
    spec = pipeline(
        {
            "train": {
                "uses": "python",
                "queue": queue,
                "tags": ["gpu"],
                "with": {"function": fn("whoami")},
            }
        }
    )
    async with StageWorker(client, task_queues=task_queues_for([queue], []), identity="cpu"):
        run_id = await start(client, spec)
        await asyncio.sleep(2.0)
        state = await runs.run_state(client, run_id)
        assert state.stages["train"].status == "running"  # scheduled, not taken
        assert state.stages["train"].outputs is None
        other = await Client.connect(temporal_address)
        gpu = StageWorker(
            other, task_queues=task_queues_for([queue], ["gpu"]), identity="gpu", workflows=False
        )
        async with gpu:
            state = await finish(client, run_id)
    assert state.stages["train"].outputs["worker"] == "gpu"
