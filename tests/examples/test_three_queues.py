"""examples/three_queues.yaml on three `stageflow worker` processes, one per queue.

With the `api` worker stopped, the `default` and `ml` stages still run and only the `api` stage
waits; it continues once an `api` worker is back, and no prompt is sent twice.
"""

from __future__ import annotations

import asyncio
import signal
import uuid

from cli_run import REPO
from helpers import finish, wait_until
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from worker_processes import WorkerProcesses

from stageflow.engine.runs import compile_run, run_state, start_run
from stageflow.engine.types import SUCCEEDED
from stageflow.spec.model import Pipeline
from stageflow.spec.validate import load_pipeline
from stageflow.testing.openai_server import FakeOpenAI

EXAMPLES = REPO / "examples"


async def _pollers(client: Client, queue: str) -> int:
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    return len((await client.workflow_service.describe_task_queue(request)).pollers)


def _own_queues(spec: Pipeline, suffix: str) -> Pipeline:
    """The example with its queue names made unique to this test (the dev server is shared)."""
    data = spec.to_dict()
    for stage in data["stages"].values():
        stage["queue"] = f"{stage.get('queue', 'default')}-{suffix}"
    return Pipeline.model_validate(data)


async def test_a_stopped_api_worker_stalls_only_the_api_stage(
    client: Client, worker_processes: WorkerProcesses
) -> None:
    suffix = uuid.uuid4().hex[:8]
    default, ml, api = (f"{name}-{suffix}" for name in ("default", "ml", "api"))
    async with FakeOpenAI(key="test-key", delay=0.0) as llm:
        spec = _own_queues(load_pipeline(EXAMPLES / "three_queues.yaml"), suffix).with_params(
            {"llm_base_url": llm.base_url, "samples": 1500, "epochs": 2, "documents": 6}
        )
        spawn = worker_processes.spawn
        spawn(default, name="default", paths=[EXAMPLES], workflows=True)
        spawn(ml, name="ml", paths=[EXAMPLES])
        first_api = spawn(api, name="api", paths=[EXAMPLES], LLM_API_KEY="test-key")
        await wait_until(lambda: _pollers(client, api), timeout=60)

        first_api.send_signal(signal.SIGTERM)  # stop it: it drains (nothing to do) and exits
        assert await asyncio.to_thread(first_api.wait, 60) == 0

        run_id = f"three-queues-{suffix}"
        await start_run(client, compile_run(spec, run_id=run_id, heartbeat_timeout=5.0))

        async def others_done() -> bool:
            state = await run_state(client, run_id)
            return all(state.stages[s].status == SUCCEEDED for s in ("readiness", "train"))

        await wait_until(others_done, timeout=120, interval=0.5)
        state = await run_state(client, run_id)
        assert state.status == "running"
        assert state.stages["analyze"].status in ("pending", "running")
        assert state.stages["report"].status == "pending"
        assert llm.seen == []  # nothing reached the API while no api worker was there

        spawn(api, name="api-again", paths=[EXAMPLES], LLM_API_KEY="test-key")
        final = await finish(client, run_id, timeout=120)

    assert final.status == "succeeded", {n: s.error for n, s in final.stages.items()}
    report = final.stages["report"].outputs
    assert report["answers"] == 6
    assert report["epochs"] == 2
    assert sorted(llm.answered().values()) == [1] * 6  # each prompt answered exactly once
    assert final.stages["analyze"].worker == "api-again"
    assert final.stages["train"].worker == "ml"
