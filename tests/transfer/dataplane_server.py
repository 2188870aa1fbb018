"""Fixtures for the HTTP data-plane tests: real uvicorn servers on loopback, a tiny filesystem.

Test modules import the ``*_fixture`` functions they use from here (each registers under the
name without ``_fixture``: ``serve``, ``make_store``, ``small_fs``), so they do not depend on
what ``conftest.py`` holds.

Each server runs the real app in a uvicorn thread on a free 127.0.0.1 port (the socket is
bound before the thread starts, so there is no race for the port). ``small_fs`` mounts a real
4 MiB tmpfs, which needs root; without it the tests that use it are skipped and say why.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from stageflow.transfer.http_app import create_data_app
from stageflow.transfer.store import ContentStore

TOKEN = "test-token-0123456789abcdef"
CHUNK = 64 * 1024


@dataclass
class DataServer:
    url: str
    port: int
    store: ContentStore
    token: str
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _bind(port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response pays a 40 ms delayed-ACK stall on loopback.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


ServeFactory = Callable[..., DataServer]


def start_server(
    store: ContentStore,
    *,
    token: str = TOKEN,
    max_upload_bytes: int = 1 << 30,
    accept_uploads: bool = True,
    port: int = 0,
) -> DataServer:
    """Run the real app over ``store`` in a uvicorn thread; returns once it accepts requests."""
    app = create_data_app(
        store, token=token, max_upload_bytes=max_upload_bytes, accept_uploads=accept_uploads
    )
    config = uvicorn.Config(
        app,
        log_level="critical",
        lifespan="off",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    sock = _bind(port)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError("the data-plane test server did not start")
        time.sleep(0.005)
    return DataServer(f"http://127.0.0.1:{port}", port, store, token, server, thread, sock)


ServeFactory = Callable[..., DataServer]


@pytest.fixture(name="serve")
def serve_fixture() -> Iterator[ServeFactory]:
    """Start real data-plane servers (``start_server``); every one is stopped at teardown."""
    started: list[DataServer] = []

    def start(store: ContentStore, **options: Any) -> DataServer:
        running = start_server(store, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.should_exit = True  # all at once: each takes ~0.1 s to notice
    for running in started:
        running.stop()


@pytest.fixture(name="make_store")
def make_store_fixture(tmp_path: Path) -> Callable[..., ContentStore]:
    """Stores with small chunks under the test's temp dir, one root per name."""

    def make(name: str, *, chunk_size: int = CHUNK) -> ContentStore:
        return ContentStore(tmp_path / name, chunk_size=chunk_size)

    return make


@pytest.fixture(name="small_fs")
def small_fs_fixture(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs, to fill up for real; skipped where mounting is not allowed."""
    mountpoint = tmp_path / "small-fs"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 4 MiB tmpfs to fill up needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def files_under(path: Path) -> list[str]:
    """Every file below ``path``, relative, sorted: to assert what is and is not there."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())
