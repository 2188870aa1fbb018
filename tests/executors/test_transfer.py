"""`uses: transfer` in real pipelines: SSH host → worker → SSH host and → data server."""

from __future__ import annotations

import hashlib
import os

import pytest
from helpers import finish, pipeline, start
from temporalio.client import Client
from transfer.sshd import (
    sshd_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)

from stageflow.executors.transfer import TransferExecutor
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker


async def test_ssh_to_worker_to_ssh_and_to_the_data_server(
    client: Client,
    queue: str,
    sshd,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE", str(sshd.client_key))
    monkeypatch.setenv("STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS", str(sshd.known_hosts))
    source = sshd.scratch / "export.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(payload)
    server_url, server_store = data_server

    def stage(**with_: str) -> dict:
        return {"uses": "transfer", "queue": queue, "with": with_}

    spec = pipeline(
        {
            "fetch": stage(source=sshd.url(source), name="export.bin"),
            "ship": {
                **stage(
                    source="${fetch.outputs.artifact}",
                    destination=sshd.url(sshd.scratch / "back.bin"),
                ),
                "needs": ["fetch"],
            },
            "keep": {
                **stage(source="${fetch.outputs.artifact}", destination="server"),
                "needs": ["fetch"],
            },
        }
    )
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=server_url
    ):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    digest = hashlib.sha256(payload).hexdigest()
    fetched = state.stages["fetch"].outputs
    assert fetched["artifact"]["sha256"] == digest
    assert fetched["artifact"]["locations"] == [data_plane.url]
    assert fetched["bytes"] == len(payload) and fetched["rate"] > 0
    assert (sshd.scratch / "back.bin").read_bytes() == payload
    assert state.stages["ship"].outputs["url"].endswith("/back.bin")
    kept = state.stages["keep"].outputs["artifact"]
    assert server_url in kept["locations"]
    assert server_store.path(digest).read_bytes() == payload


def test_bad_destinations_and_urls_are_rejected_before_the_run() -> None:
    problems = TransferExecutor.check_params({"source": "ssh://host", "destination": "nowhere"})
    fields = {loc[0] for loc, _ in problems}
    assert fields == {"source", "destination"}
    assert (
        TransferExecutor.check_params({"source": "${a.outputs.x}", "destination": "server"}) == []
    )


async def test_a_directory_from_ssh_to_an_artifact_and_back_to_ssh(
    client: Client,
    queue: str,
    sshd,
    data_plane: DataPlane,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A predictions dir (part_N.parquet files, a nested dir) pulled, published, shipped back."""
    monkeypatch.setenv("STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE", str(sshd.client_key))
    monkeypatch.setenv("STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS", str(sshd.known_hosts))
    source = sshd.scratch / "predictions"
    files = {"part_0.parquet": 1 << 20, "part_1.parquet": 12345, "meta/_SUCCESS": 0}
    for rel, size in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(os.urandom(size))
    back = sshd.scratch / "shipped" / "predictions"

    spec = pipeline(
        {
            "fetch": {"uses": "transfer", "queue": queue,
                      "with": {"source": sshd.url(source), "name": "predictions"}},
            "ship": {"uses": "transfer", "queue": queue, "needs": ["fetch"],
                     "with": {"source": "${fetch.outputs.artifact}",
                              "destination": sshd.url(back)}},
        }
    )  # fmt: skip
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    fetched = state.stages["fetch"].outputs
    assert fetched["artifact"]["kind"] == "dir"
    assert fetched["artifact"]["size"] == fetched["bytes"] == sum(files.values())
    shipped = state.stages["ship"].outputs
    assert shipped["bytes"] == sum(files.values()) and shipped["url"].endswith("/predictions")
    for rel in files:
        assert (back / rel).read_bytes() == (source / rel).read_bytes(), rel
    assert sorted(os.listdir(back.parent)) == ["predictions"]
