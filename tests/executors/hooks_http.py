"""A real loopback HTTP receiver for the ``notify`` and ``external`` tests.

It records every POST (headers and exact body bytes) and answers with the next status of
``statuses`` (200 once they run out). ``on_job`` is called with each accepted JSON body, which
is how a test plays an outside service (a model pod that later calls back).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stageflow.worker.dataplane import _Server


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)
    on_job: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _server: _Server | None = None

    async def __aenter__(self) -> Receiver:
        self._server = _Server(self._app(), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{await self._server.start()}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            self.received.append(Received(dict(request.headers), body))
            n = len(self.received)
            status = self.statuses[n - 1] if n <= len(self.statuses) else 200
            if status < 300 and self.on_job is not None:
                await self.on_job(json.loads(body))
            return JSONResponse({"n": n}, status_code=status)

        return app
