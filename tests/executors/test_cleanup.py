"""`uses: cleanup`: a worker's staging is emptied of what the data server holds, and only that."""

from __future__ import annotations

from helpers import finish, fn, pipeline, start
from temporalio.client import Client

from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker


async def test_cleanup_drops_what_the_server_holds_and_scratch_only(
    client: Client, queue: str, data_plane: DataPlane, data_server: tuple[str, ContentStore]
) -> None:
    server_url, server_store = data_server

    def blob(persist: bool) -> dict:
        stage = {
            "uses": "python",
            "queue": queue,
            "with": {"function": fn("write_blob"), "size": 4096},
        }
        return {**stage, "persist": True} if persist else stage

    spec = pipeline(
        {
            "kept": blob(persist=True),  # pushed to the server, staging copy dropped at once
            "local": blob(persist=False),  # exists only on this worker
            "scratch": blob(persist=False),
            "use": {  # fetches `kept` back into staging, as a downstream stage does
                "uses": "python",
                "queue": queue,
                "needs": ["kept"],
                "with": {"function": fn("read_blob"), "blob": "${kept.outputs.blob}", "seconds": 0},
            },
            "cleanup": {
                "uses": "cleanup",
                "queue": queue,
                "needs": ["use", "local", "scratch"],
                "with": {
                    "artifacts": ["${kept.outputs.blob}", "${local.outputs.blob}"],
                    "scratch": "${scratch.outputs.blob}",
                },
            },
        }
    )
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=server_url
    ):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    sha = {
        name: state.stages[name].outputs["blob"]["sha256"] for name in ("kept", "local", "scratch")
    }
    store = data_plane.store
    assert server_store.has(sha["kept"]) and not store.has(sha["kept"])
    assert store.has(sha["local"])  # the only copy: never dropped
    assert not store.has(sha["scratch"])
    assert state.stages["cleanup"].outputs == {
        "removed_objects": 2,
        "freed_bytes": 2 * 4096,
        "kept_objects": 1,
    }
    run_dirs = [store.root / part / state.run_id for part in ("work", "inputs")]
    leftovers = [p for d in run_dirs if d.exists() for p in d.iterdir() if p.name != "cleanup"]
    assert leftovers == []
