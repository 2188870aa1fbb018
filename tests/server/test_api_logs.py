"""Logs through the API: idempotent ingestion, paging, following (NDJSON, WebSocket), restarts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_helpers import register, start, wait_run, wait_stage
from conftest import ADMIN, READ, Api, server_config
from helpers import fn
from live_server import serve_in_thread
from temporalio.client import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from stageflow.server.app import create_server_app
from stageflow.worker.runner import StageWorker


def batch(run_id: str, seqs: range, *, stream_id: str, worker: str = "w1", **extra: Any) -> dict:
    lines = [
        {
            "seq": seq,
            "run_id": run_id,
            "stage": extra.get("stage", "a"),
            "instance": None,
            "attempt": 1,
            "at": "2026-01-01T00:00:00Z",
            "level": "info",
            "stream": "stdout",
            "message": f"line {seq}",
        }
        for seq in seqs
    ]
    return {"worker": worker, "stream_id": stream_id, "lines": lines}


@pytest.fixture
async def live_run(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str
) -> AsyncIterator[str]:
    """A run that stays running (its stage's queue has no worker) while a test tails it."""
    stage = {"uses": "python", "queue": f"{queue}-idle", "with": {"function": fn("whoami")}}
    await register(http, unique, {"a": stage})
    async with StageWorker(client, task_queues=[]):  # the workflow only
        run_id = await start(http, unique)
        await wait_stage(http, run_id, "a", "running")
        yield run_id
        await http.post(f"/api/v1/runs/{run_id}/cancel")
        await wait_run(http, run_id)  # ends before its workflow worker stops


def ws_url(api: Api, run_id: str, **query: Any) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"{api.url.replace('http', 'ws', 1)}/api/v1/runs/{run_id}/logs/stream?{params}"


async def test_batches_are_idempotent_and_paged(http: httpx.AsyncClient, unique: str) -> None:
    stream = str(uuid.uuid4())
    first = await http.post("/api/v1/logs", json=batch(unique, range(5), stream_id=stream))
    assert first.json() == {"accepted": 5, "duplicates": 0}
    again = await http.post("/api/v1/logs", json=batch(unique, range(3, 8), stream_id=stream))
    assert again.json() == {"accepted": 5, "duplicates": 2}
    other_stage = batch(unique, range(2), stream_id=str(uuid.uuid4()), stage="b")
    assert (await http.post("/api/v1/logs", json=other_stage)).json()["duplicates"] == 0

    everything = (await http.get(f"/api/v1/runs/{unique}/logs")).json()["lines"]
    assert [line["message"] for line in everything] == [f"line {i}" for i in (*range(8), 0, 1)]
    assert [line["stage"] for line in everything] == ["a"] * 8 + ["b"] * 2

    pages, after = [], 0
    while True:
        page = (
            await http.get(f"/api/v1/runs/{unique}/logs", params={"after": after, "limit": 3})
        ).json()
        if not page["lines"]:
            break
        pages.append([line["seq"] for line in page["lines"]])
        after = page["next"]
    assert pages == [[0, 1, 2], [3, 4, 5], [6, 7, 0], [1]]
    only_b = (await http.get(f"/api/v1/runs/{unique}/logs", params={"stage": "b"})).json()
    assert [line["seq"] for line in only_b["lines"]] == [0, 1]


async def test_batch_limits(http: httpx.AsyncClient, unique: str) -> None:
    too_many = await http.post("/api/v1/logs", json=batch(unique, range(1001), stream_id=unique))
    assert too_many.status_code == 422 and "lines" in too_many.json()["error"]
    big = batch(unique, range(2), stream_id=unique)
    big["lines"][0]["message"] = "x" * (1 << 20)
    too_big = await http.post("/api/v1/logs", json=big)
    assert too_big.status_code == 413 and "split" in too_big.json()["error"]
    bad = await http.post("/api/v1/logs", json={"worker": "w", "stream_id": "s", "lines": [{}]})
    assert bad.status_code == 422 and bad.json()["issues"]


async def test_follow_streams_ndjson_until_the_run_ends(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str
) -> None:
    await register(
        http, unique, {"a": {"uses": "python", "queue": queue, "with": {"function": fn("whoami")}}}
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        await wait_run(http, run_id)
    await http.post("/api/v1/logs", json=batch(run_id, range(3), stream_id=unique))
    lines = []
    async with http.stream(
        "GET", f"/api/v1/runs/{run_id}/logs", params={"follow": "true", "after": 0}
    ) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        async for text in response.aiter_lines():
            if text:
                lines.append(json.loads(text))
    # The run has ended: the stream closed by itself once no line came for the grace period.
    assert [line["message"] for line in lines] == ["line 0", "line 1", "line 2"]


async def test_websocket_replays_then_tails(
    api: Api, http: httpx.AsyncClient, live_run: str, unique: str
) -> None:
    await http.post("/api/v1/logs", json=batch(live_run, range(2), stream_id=unique))
    headers = {"Authorization": f"Bearer {READ}"}
    async with connect(ws_url(api, live_run), additional_headers=headers) as ws:
        replayed = [json.loads(await ws.recv()) for _ in range(2)]
        assert [line["message"] for line in replayed] == ["line 0", "line 1"]
        await http.post("/api/v1/logs", json=batch(live_run, range(2, 3), stream_id=unique))
        new = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert new["message"] == "line 2" and new["id"] > replayed[-1]["id"]
    # A client resumes where it stopped with ?after=<last id>; browsers pass ?token=.
    async with connect(ws_url(api, live_run, after=replayed[-1]["id"], token=ADMIN)) as ws:
        assert json.loads(await ws.recv())["message"] == "line 2"


async def test_websocket_needs_a_token(api: Api, unique: str) -> None:
    for query, code in (({}, 4401), ({"token": "wrong-token-wrong-token"}, 4403)):
        async with connect(ws_url(api, unique, **query)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
        assert "token" in closed.value.rcvd.reason


async def test_logs_survive_a_restart(
    api: Api, http: httpx.AsyncClient, temporal_address: str, live_run: str, unique: str
) -> None:
    """A second server on the same DB replays what the first stored (WebSocket included)."""
    await http.post("/api/v1/logs", json=batch(live_run, range(3), stream_id=unique))
    home = api.home / f"restart-{unique}"
    app = create_server_app(
        api.store,
        token=ADMIN,
        max_upload_bytes=1 << 20,
        control=server_config(api.database_url, home, temporal_address),
    )
    with serve_in_thread(app) as other:
        async with httpx.AsyncClient(
            base_url=other.url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as second:
            page = (await second.get(f"/api/v1/runs/{live_run}/logs")).json()
            assert [line["seq"] for line in page["lines"]] == [0, 1, 2]
            # A line stored by the first server reaches a follower of the second (DB polling).
            url = f"{other.url.replace('http', 'ws', 1)}/api/v1/runs/{live_run}/logs/stream"
            async with connect(f"{url}?after={page['next']}&token={ADMIN}") as ws:
                await http.post("/api/v1/logs", json=batch(live_run, range(3, 4), stream_id=unique))
                assert json.loads(await asyncio.wait_for(ws.recv(), 20))["seq"] == 3
