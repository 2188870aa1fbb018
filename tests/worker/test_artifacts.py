"""Artifacts between worker processes that share no directory, and persisted to a data server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from helpers import finish, start
from temporalio.client import Client
from worker_processes import WorkerProcesses

from stageflow.spec.model import Pipeline
from stageflow.transfer.store import ContentStore
from stageflow.worker.runner import StageWorker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


async def test_directory_artifact_moves_between_workers_with_no_shared_dir(
    client: Client, worker_processes: WorkerProcesses, data_server: tuple[str, ContentStore]
) -> None:
    server_url, server_store = data_server
    suffix = os.urandom(4).hex()
    worker_processes.spawn(f"produce-{suffix}", name="producer", paths=[EXAMPLES])
    worker_processes.spawn(
        f"consume-{suffix}",
        name="consumer",
        paths=[EXAMPLES],
        STAGEFLOW_DATA_SERVER_URL=server_url,
    )
    producer_home = worker_processes.home("producer")
    consumer_home = worker_processes.home("consumer")
    spec = Pipeline.model_validate(
        {
            "name": "files",
            "stages": {
                "write": {
                    "queue": f"produce-{suffix}",
                    "uses": "python",
                    "with": {"function": "files_steps:write_parts", "parts": 4, "rows": 500},
                },
                "count": {
                    "queue": f"consume-{suffix}",
                    "needs": ["write"],
                    "uses": "python",
                    "persist": True,
                    "with": {"function": "steps:digest_tree", "data": "${write.outputs.data}"},
                },
            },
        }
    )
    async with StageWorker(client, task_queues=[]):
        state = await finish(client, await start(client, spec), timeout=120)
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    data_ref = state.stages["write"].outputs["data"]
    assert data_ref["kind"] == "dir" and data_ref["name"] == "data"
    received = state.stages["count"].outputs

    # The producer wrote it; the consumer got a verified copy, fetched over HTTP into its own
    # staging dir, as a pathlib.Path.
    (written,) = (producer_home / "staging" / "work").rglob("data")
    assert received["tree"] == _tree(written)
    assert len(received["tree"]) == 4
    assert received["is_path"]
    assert received["at"].startswith(str(consumer_home / "staging" / "inputs"))

    # The persisted summary lives on the data server only, and its staging copy is gone.
    summary = state.stages["count"].outputs["summary"]
    assert summary["locations"] == [server_url]
    assert server_store.has(summary["sha256"])
    assert not ContentStore(consumer_home / "staging").has(summary["sha256"])
