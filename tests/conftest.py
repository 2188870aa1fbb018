"""Shared fixtures: one real Temporal dev server for the session, unique queues per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import TOKEN
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from worker_processes import worker_processes  # noqa: F401  (a fixture for every test)

from stageflow.engine.devserver import DEV_SERVER_DYNAMIC_CONFIG, find_temporal_binary
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane, serve_store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test touches ~/.stageflow, and no test picks up a real cluster's address."""
    monkeypatch.setenv("STAGEFLOW_HOME", str(tmp_path_factory.mktemp("home")))
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_binary(),
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=[f"--dynamic-config-value={v}" for v in DEV_SERVER_DYNAMIC_CONFIG],
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
def queue() -> str:
    """A task queue no other test uses."""
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where test stage functions record what they did (see steps.py)."""
    path = tmp_path / "log"
    path.mkdir()
    return path


@pytest.fixture
async def data_server(tmp_path: Path) -> AsyncIterator[tuple[str, ContentStore]]:
    """A real data server (the `stageflow server` data app) on loopback: (url, its store).

    Its lake is ``tmp_path / "lake"``."""
    store = ContentStore(tmp_path / "server")
    server, port = await serve_store(
        store,
        token=TOKEN,
        host="127.0.0.1",
        port=0,
        accept_uploads=True,
        lake_dir=tmp_path / "lake",
    )
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        await server.stop()


@pytest.fixture
async def data_plane(tmp_path: Path) -> AsyncIterator[DataPlane]:
    """An in-process worker's store, served over HTTP like a worker's."""
    plane = DataPlane(store=ContentStore(tmp_path / "staging"), token=TOKEN)
    async with plane:
        yield plane
