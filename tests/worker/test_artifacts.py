"""Artifacts between worker processes that share no directory, and persisted to a data server."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import finish, start
from temporalio.client import Client

from stageflow.spec.model import Pipeline
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import serve_store
from stageflow.worker.runner import StageWorker

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "x" * 24


@pytest.fixture
def worker_process(temporal_address: str, tmp_path: Path) -> Iterator:
    """`stageflow worker` processes, each with its own home and staging dir."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(queue: str, name: str, server_url: str | None = None) -> Path:
        home = tmp_path / name
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_address,
            "STAGEFLOW_HOME": str(home),
            "STAGEFLOW_TOKEN": TOKEN,
        }
        if server_url:
            env["STAGEFLOW_DATA_SERVER_URL"] = server_url
        log = tmp_path / f"{name}.log"
        argv = [sys.executable, "-m", "stageflow", "worker", "--queue", queue, "--no-workflows"]
        argv += [
            "--identity",
            name,
            "--path",
            str(REPO / "examples"),
            "--path",
            str(REPO / "tests"),
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append((process, log))
        return home

    yield spawn
    for process, log in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


async def test_directory_artifact_moves_between_workers_with_no_shared_dir(
    client: Client, tmp_path: Path, worker_process
) -> None:
    server_store = ContentStore(tmp_path / "server")
    server, port = await serve_store(
        server_store, token=TOKEN, host="127.0.0.1", port=0, accept_uploads=True
    )
    server_url = f"http://127.0.0.1:{port}"
    suffix = os.urandom(4).hex()
    producer_home = worker_process(f"produce-{suffix}", "producer")
    consumer_home = worker_process(f"consume-{suffix}", "consumer", server_url)
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
    try:
        async with StageWorker(client, task_queues=[]):
            state = await finish(client, await start(client, spec), timeout=120)
    finally:
        await server.stop()
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
