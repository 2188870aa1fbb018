"""A real, small control plane for worker and CLI tests: FastAPI under uvicorn on loopback.

It implements the worker → server contract of ``docs/control-plane.md`` (register, heartbeat,
``POST /api/v1/logs`` idempotent on (worker, stream_id, seq)) and the two reads the CLI uses
(``GET /api/v1/runs/{id}/logs`` paged or followed, ``GET /api/v1/workers``), keeping everything
in memory so tests can look at exactly what arrived. It runs in the test's event loop and can be
stopped and started again on the same port, to inject a real outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from stageflow.transfer.auth import check_bearer

__all__ = ["FakeControlPlane"]


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handling (the test process owns its signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class FakeControlPlane:
    token: str
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    """Stored log lines in order of first arrival, each with ``id``, ``worker``, ``stream_id``."""
    keys: set[tuple[str, str, int]] = field(default_factory=set)
    received: int = 0
    """Log lines received, re-sent ones included."""
    registrations: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended_runs: set[str] = field(default_factory=set)
    """Runs whose ``?follow=true`` stream ends once it has sent every line."""

    def __post_init__(self) -> None:
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = self._build()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the fake control plane did not start")
            await asyncio.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server, self._task = None, None

    def forget_workers(self) -> None:
        """As a server with a fresh control DB would: heartbeats now get 404 until registered."""
        self.workers.clear()

    def stream_lines(self, worker: str, stream_id: str) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line["worker"] == worker and line["stream_id"] == stream_id
        ]

    def states(self, worker_id: str) -> list[str]:
        """The states ``worker_id`` reported, in order, repeats collapsed."""
        seen: list[str] = []
        for who, body in self.heartbeats:
            if who == worker_id and (not seen or seen[-1] != body["state"]):
                seen.append(body["state"])
        return seen

    # ------------------------------------------------------------------ the app
    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def auth(request: Request, call_next: Any) -> Any:
            problem = check_bearer(request.headers.get("authorization"), self.token)
            if problem is not None:
                status = 401 if problem == "missing" else 403
                return JSONResponse({"error": f"token {problem}"}, status_code=status)
            return await call_next(request)

        @app.post("/api/v1/logs")
        async def post_logs(request: Request) -> Any:
            body = await request.json()
            worker, stream_id = body["worker"], body["stream_id"]
            if len(body["lines"]) > 1000 or len(await request.body()) > 1 << 20:
                return JSONResponse({"error": "batch too large"}, status_code=413)
            for line in body["lines"]:
                self.received += 1
                key = (worker, stream_id, int(line["seq"]))
                if key in self.keys:
                    continue
                self.keys.add(key)
                stored = {**line, "worker": worker, "stream_id": stream_id}
                stored["id"] = len(self.lines) + 1
                self.lines.append(stored)
            return {"accepted": len(body["lines"])}

        @app.post("/api/v1/workers/register")
        async def register(request: Request) -> Any:
            body = await request.json()
            self.registrations.append(body)
            self.workers[body["worker_id"]] = {**body, "state": "alive", "load": None}
            return self.workers[body["worker_id"]]

        @app.post("/api/v1/workers/{worker_id}/heartbeat")
        async def heartbeat(worker_id: str, request: Request) -> Any:
            body = await request.json()
            if worker_id not in self.workers:
                return JSONResponse({"error": "register first"}, status_code=404)
            self.heartbeats.append((worker_id, body))
            self.workers[worker_id].update(state=body["state"], load=body.get("load"))
            return self.workers[worker_id]

        @app.get("/api/v1/workers")
        async def list_workers(state: str | None = None) -> Any:
            listed = [w for w in self.workers.values() if state is None or w["state"] == state]
            return {"workers": listed}

        @app.get("/api/v1/runs/{run_id}/logs")
        async def get_logs(
            run_id: str,
            stage: str | None = None,
            after: int = 0,
            limit: int = 500,
            follow: bool = False,
        ) -> Any:
            def page(cursor: int, size: int) -> list[dict[str, Any]]:
                return [
                    line
                    for line in self.lines
                    if line["id"] > cursor
                    and line["run_id"] == run_id
                    and (stage is None or line["stage"] == stage)
                ][:size]

            if not follow:
                lines = page(after, limit)
                return {"lines": lines, "next": lines[-1]["id"] if lines else after}

            async def stream() -> AsyncIterator[bytes]:
                cursor = after
                while True:
                    ended = run_id in self.ended_runs  # read before the page: nothing is missed
                    lines = page(cursor, 1000)
                    for line in lines:
                        yield json.dumps(line).encode() + b"\n"
                        cursor = line["id"]
                    if not lines:
                        if ended:
                            return
                        await asyncio.sleep(0.05)

            return StreamingResponse(stream(), media_type="application/x-ndjson")

        return app
