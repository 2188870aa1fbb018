"""`uses: external` in real pipelines: a loopback "model pod" takes the job and calls back
through the data server's callback endpoint (stageflow/transfer/callbacks.py)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import TOKEN, finish, pipeline, start, wait_until
from hooks_http import Receiver
from temporalio.client import Client

from stageflow.executors.external import ExternalExecutor
from stageflow.settings import WorkerSettings
from stageflow.transfer.callbacks import MAX_CALLBACK_BODY
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane, serve_store
from stageflow.worker.runner import StageWorker

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _external(queue: str, url: str, **with_: Any) -> dict[str, Any]:
    return {"uses": "external", "queue": queue, "with": {"url": url, **with_}}


def _slm_result(job: dict[str, Any]) -> dict[str, Any]:
    """What the seed's SLM worker pod signals when its job is done."""
    return {
        "slm_id": 3,
        "job_id": job["job_id"],
        "filename": f"slm_3_job_{job['job_id']}.parquet",
        "worker_ip": "127.0.0.1",
        "size_mb": 1.5,
    }


class Pod:
    """Accepts jobs; calls back ``delay`` s later unless told to hold them (``release``)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.jobs: list[dict[str, Any]] = []
        self.callbacks: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_job(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        if self.delay is not None:
            task = asyncio.create_task(self._call_back(job, self.delay))
            self._tasks.add(task)

    async def _call_back(self, job: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        await self.release(job)

    async def release(self, job: dict[str, Any]) -> None:
        async with httpx.AsyncClient() as http:
            response = await http.post(job["callback_url"], json=_slm_result(job))
        self.callbacks.append(response.status_code)


async def test_a_model_pod_calls_back_with_its_result(
    client: Client,
    queue: str,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
) -> None:
    server_url, server_store = data_server
    pod = Pod(delay=0.5)
    async with Receiver(on_job=pod.on_job) as receiver:
        spec = pipeline(
            {
                "slm": _external(
                    queue,
                    f"{receiver.url}/inference/run",
                    payload={"job_id": "j42", "params": {"day": "2024-05-01"}},
                    timeout=30,
                )
            }
        )
        async with StageWorker(
            client, task_queues=[queue], data_plane=data_plane, server_url=server_url
        ):
            run_id = await start(client, spec)
            state = await finish(client, run_id)
    slm = state.stages["slm"]
    assert slm.status == "succeeded", slm.error
    (job,) = pod.jobs
    assert slm.outputs["result"] == _slm_result(job)
    assert slm.outputs["dispatch_status"] == 200
    assert job["params"] == {"day": "2024-05-01"}
    assert job["stageflow"] == {"run_id": run_id, "pipeline": "t", "stage": "slm"}
    assert job["callback_url"].startswith(f"{server_url}/v1/callbacks/")
    assert receiver.received[0].headers["idempotency-key"]
    assert pod.callbacks == [200]

    callback_id = job["callback_url"].rsplit("/", 1)[1]
    stored = [p.name for p in (server_store.root / "callbacks").iterdir()]
    assert stored and not any(callback_id in name for name in stored)  # ids are not on disk
    async with httpx.AsyncClient(base_url=server_url) as http:
        again = await http.post(job["callback_url"], json={"late": True})
        assert again.status_code == 409  # the first answer stands
        forged = await http.post(f"/v1/callbacks/{secrets.token_urlsafe(32)}", json={})
        assert forged.status_code == 404
        traversal = await http.post("/v1/callbacks/..%2F..%2Ftoken", json={})
        assert traversal.status_code == 404
        assert (await http.post("/v1/callbacks", json={"timeout": 5})).status_code == 401
        assert (await http.get(f"/v1/callbacks/{callback_id}")).status_code == 401
        fresh = await http.post("/v1/callbacks", json={"timeout": 5}, headers=AUTH)
        big = {"blob": "x" * (MAX_CALLBACK_BODY + 1)}
        oversized = await http.post(fresh.json()["path"], json=big)
        assert oversized.status_code == 413
        pending = await http.get(fresh.json()["path"], headers=AUTH)
        assert pending.json()["state"] == "pending"  # the oversized answer was not taken
        short = await http.post("/v1/callbacks", json={"timeout": 0.2}, headers=AUTH)
        await asyncio.sleep(0.3)
        assert (await http.post(short.json()["path"], json={})).status_code == 410


async def test_a_service_that_never_calls_back_times_out(
    client: Client,
    queue: str,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
) -> None:
    server_url, _ = data_server
    pod = Pod(delay=None)
    async with Receiver(on_job=pod.on_job) as receiver:
        spec = pipeline(
            {
                "slm": {
                    **_external(queue, receiver.url, payload={"job_id": "j1"}, timeout=1),
                    "retry": {"max_attempts": 1},
                }
            }
        )
        async with StageWorker(
            client, task_queues=[queue], data_plane=data_plane, server_url=server_url
        ):
            state = await finish(client, await start(client, spec))
    slm = state.stages["slm"]
    assert slm.status == "failed"
    assert slm.error_type == "CallbackTimeout"
    assert "did not call back within 1 s" in (slm.error or "")
    assert len(pod.jobs) == 1


async def test_the_callback_survives_a_data_server_restart(
    client: Client, queue: str, data_plane: DataPlane, tmp_path: Path
) -> None:
    store = ContentStore(tmp_path / "server")
    server, port = await serve_store(
        store, token=TOKEN, host="127.0.0.1", port=0, accept_uploads=True
    )
    server_url = f"http://127.0.0.1:{port}"
    pod = Pod(delay=None)
    try:
        async with Receiver(on_job=pod.on_job) as receiver:
            spec = pipeline({"slm": _external(queue, receiver.url, payload={"job_id": "r1"})})
            async with StageWorker(
                client, task_queues=[queue], data_plane=data_plane, server_url=server_url
            ):
                run_id = await start(client, spec)
                await wait_until(lambda: pod.jobs)
                await server.stop()
                await asyncio.sleep(1.0)  # the stage keeps waiting while the server is down
                server, _ = await serve_store(
                    ContentStore(tmp_path / "server"),
                    token=TOKEN,
                    host="127.0.0.1",
                    port=port,
                    accept_uploads=True,
                )
                await pod.release(pod.jobs[0])
                state = await finish(client, run_id)
    finally:
        await server.stop()
    slm = state.stages["slm"]
    assert slm.status == "succeeded", slm.error
    assert slm.outputs["result"] == _slm_result(pod.jobs[0])
    assert pod.callbacks == [200] and slm.attempts == 1


async def test_a_retry_waits_on_the_same_callback_instead_of_dispatching_again(
    client: Client,
    queue: str,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
) -> None:
    server_url, _ = data_server
    pod = Pod(delay=None)
    async with Receiver(on_job=pod.on_job) as receiver:
        spec = pipeline(
            {
                "slm": {
                    **_external(queue, receiver.url, payload={"job_id": "k7"}, timeout=60),
                    "retry": {"max_attempts": 3, "initial_interval": 0.1},
                }
            }
        )
        first = StageWorker(
            client,
            task_queues=[queue],
            data_plane=data_plane,
            server_url=server_url,
            settings=WorkerSettings(shutdown_grace=0.2),
        )
        async with first:
            run_id = await start(client, spec)
            await wait_until(lambda: pod.jobs)
            await asyncio.sleep(0.3)  # let the accepted dispatch reach the checkpoint
        # the first worker is gone, its attempt cancelled; a new worker takes the retry
        async with StageWorker(
            client, task_queues=[queue], data_plane=data_plane, server_url=server_url
        ):
            await asyncio.sleep(1.0)  # the retry starts and waits on the recorded callback
            await pod.release(pod.jobs[0])
            state = await finish(client, run_id)
    slm = state.stages["slm"]
    assert slm.status == "succeeded", slm.error
    assert slm.attempts >= 2
    assert len(pod.jobs) == 1  # dispatched once, although the stage ran twice
    assert slm.outputs["result"] == _slm_result(pod.jobs[0])


def test_bad_external_parameters_are_rejected_before_the_run() -> None:
    problems = ExternalExecutor.check_params({"url": "pod:8080", "timeout": 0})
    assert {loc[0] for loc, _ in problems} == {"url", "timeout"}
    assert ExternalExecutor.check_params({"url": "${params.pod}", "timeout": "10m"}) == []


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
