"""Log shipping survives a real `stageflow server` being SIGKILLed and restarted mid-run:
every line a stage printed or logged is stored exactly once, in order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from helpers import TOKEN, finish, fn, pipeline, start, wait_until
from temporalio.client import Client

from stageflow.engine.devserver import free_port
from stageflow.settings import WorkerSettings
from stageflow.worker.lifecycle import WorkerLifecycle
from stageflow.worker.runner import StageWorker

LINES = 30


def _start_server(home: Path, port: int, temporal_address: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STAGEFLOW_HOME": str(home),
        "STAGEFLOW_TOKEN": TOKEN,
        "STAGEFLOW_SERVER_READ_TOKEN": "read-" + "r" * 24,
        "TEMPORAL_ADDRESS": temporal_address,
    }
    argv = [sys.executable, "-m", "stageflow", "server", "--port", str(port)]
    argv += ["--database-url", f"sqlite:///{home / 'control.db'}"]
    with open(home / f"server-{port}.log", "ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_no_line_is_lost_or_duplicated_across_a_server_crash(
    client: Client, temporal_address: str, queue: str, tmp_path: Path
) -> None:
    home = tmp_path / "server-home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(home, port, temporal_address)
    try:
        await wait_until(lambda: _healthy(url), timeout=60, interval=0.2)
        settings = WorkerSettings(server_url=url, heartbeat_interval=1.0)
        lifecycle = WorkerLifecycle(
            worker_id="crash-test",
            queues=[queue],
            tags=[],
            staging_dir=tmp_path / "staging",
            data_url=None,
            token=TOKEN,
            settings=settings,
        )
        spec = pipeline(
            {
                "talk": {
                    "uses": "python",
                    "queue": queue,
                    "with": {"function": fn("chatty"), "lines": LINES, "delay": 0.2},
                }
            }
        )
        async with lifecycle:
            async with StageWorker(client, task_queues=[queue], settings=settings):
                run_id = await start(client, spec)
                await asyncio.sleep(1.5)  # some lines shipped
                server.send_signal(signal.SIGKILL)
                server.wait()
                await asyncio.sleep(2.0)  # lines keep coming while the server is down
                server = _start_server(home, port, temporal_address)
                await wait_until(lambda: _healthy(url), timeout=60, interval=0.2)
                state = await finish(client, run_id, timeout=60)
            assert state.status == "succeeded"
        # Leaving the lifecycle flushed everything; read it back through the API.
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as http:
            messages: list[str] = []
            after = 0
            while True:
                page = (
                    await http.get(f"/api/v1/runs/{run_id}/logs", params={"after": after})
                ).json()
                messages += [line["message"] for line in page["lines"]]
                if not page["lines"]:
                    break
                after = page["next"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    printed = [m for m in messages if m.startswith("chatty line")]
    logged = [m for m in messages if m.startswith("logged line")]
    assert printed == [f"chatty line {n} of {LINES}" for n in range(1, LINES + 1)]
    assert logged == [f"logged line {n}" for n in range(1, LINES + 1)]
