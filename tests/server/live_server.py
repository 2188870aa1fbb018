"""A real ``stageflow server`` app on loopback, served by uvicorn in a thread of this process.

The thread has its own event loop (as a separate server process would), so tests may call it
from async code and from blocking code (schemathesis) alike.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

__all__ = ["LiveServer", "serve_in_thread"]


class _ThreadUvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals belong to the main thread
        yield


@dataclass
class LiveServer:
    app: FastAPI
    url: str
    server: _ThreadUvicorn
    thread: threading.Thread

    @property
    def control(self) -> Any:
        return self.app.state.control


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, timeout: float = 60) -> Iterator[LiveServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws="websockets-sansio", timeout_graceful_shutdown=5
    )
    server = _ThreadUvicorn(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"stageflow-server-{port}", daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if server.started or not thread.is_alive():
            break
        started.wait(0.02)
    if not server.started:
        server.should_exit = True
        thread.join(10)
        sock.close()
        raise RuntimeError(f"the server did not start: {failure or 'timeout'}")
    try:
        yield LiveServer(app, f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
