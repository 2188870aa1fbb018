"""Fixtures of the server tests: a live server per module and DB backend, and PostgreSQL.

``api`` is parametrized over SQLite and a real PostgreSQL, so every test that uses it runs
against both. Tokens are fixed here (file generation is tested in test_tokens/test_app); the
admin token is the deployment token of the tests' in-process data planes, so workers can
push persisted artifacts to the server.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import TOKEN
from temporalio.testing import WorkflowEnvironment

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # helper modules import by name, under --import-mode=importlib too
    sys.path.insert(0, HERE)

from live_server import LiveServer, serve_in_thread  # noqa: E402
from pg_cluster import PostgresCluster, postgres_cluster  # noqa: E402

from stageflow.server.app import create_server_app  # noqa: E402
from stageflow.server.control import ControlConfig  # noqa: E402
from stageflow.server.settings import ServerSettings  # noqa: E402
from stageflow.server.tokens import ServerTokens  # noqa: E402
from stageflow.settings import EngineSettings  # noqa: E402
from stageflow.transfer.store import ContentStore  # noqa: E402

ADMIN = TOKEN
READ = "read-only-token-" + "r" * 24
HEARTBEAT_INTERVAL = 1.0
"""Worker heartbeat interval of the test servers: a silent worker is lost after 3 s."""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@dataclass
class Api:
    """A live server and what tests need to talk to it."""

    live: LiveServer
    backend: str
    database_url: str
    home: Path
    store: ContentStore

    @property
    def url(self) -> str:
        return self.live.url

    def client(self, token: str | None = ADMIN, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)


def server_config(
    database_url: str, home: Path, temporal_address: str, **settings: Any
) -> ControlConfig:
    values: dict[str, Any] = {
        "heartbeat_interval": HEARTBEAT_INTERVAL,
        "log_poll_interval": 0.1,
        "follow_grace": 0.5,
        "index_sync_interval": 0.0,
        **settings,
    }
    return ControlConfig(
        database_url=database_url,
        tokens=ServerTokens(admin=ADMIN, read=READ),
        settings=ServerSettings(**values),
        engine=EngineSettings(home=home),
        temporal_address=temporal_address,
    )


def database_url_for(request: pytest.FixtureRequest, backend: str, home: Path) -> str:
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return cluster.create_database()
    return f"sqlite:///{home / 'control.db'}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest,
    temporal_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    backend = request.param
    home = tmp_path_factory.mktemp(f"server-{backend}")
    url = database_url_for(request, backend, home)
    address = temporal_env.client.service_client.config.target_host
    store = ContentStore(home / "server")
    app = create_server_app(
        store, token=ADMIN, max_upload_bytes=1 << 30, control=server_config(url, home, address)
    )
    with serve_in_thread(app) as live:
        yield Api(live, backend, url, home, store)


@pytest.fixture
async def http(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the module's server."""
    async with api.client() as client:
        yield client


@pytest.fixture
def unique() -> str:
    """A short name no other test uses (pipelines, workers, runs)."""
    return f"t{uuid.uuid4().hex[:10]}"
