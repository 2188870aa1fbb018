"""The control plane's live parts, opened when the server starts and closed when it stops.

``ControlConfig`` says where things are (DB URL, tokens, Temporal address, settings);
``open_control_plane`` connects to the DB (applying migrations) and to Temporal: a configured
cluster (``TEMPORAL_ADDRESS`` or a profile), an explicit address, or, with neither, the
embedded dev server of the data dir, which the server then owns and stops on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from temporalio.client import Client

from stageflow.engine.client import connect, engine_session
from stageflow.server.db import Database, open_database
from stageflow.server.index import RunIndex
from stageflow.server.logbus import LogSignal
from stageflow.server.settings import ServerSettings
from stageflow.server.telemetry import Telemetry
from stageflow.server.tokens import ServerTokens
from stageflow.settings import EngineSettings
from stageflow.transfer.store import ContentStore

__all__ = ["ControlConfig", "ControlPlane", "open_control_plane"]


@dataclass(frozen=True)
class ControlConfig:
    database_url: str
    tokens: ServerTokens
    settings: ServerSettings = field(default_factory=ServerSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    temporal_address: str | None = None
    """Connect here; None: TEMPORAL_ADDRESS / a profile, else the embedded dev server."""


@dataclass
class ControlPlane:
    config: ControlConfig
    db: Database
    client: Client
    store: ContentStore
    index: RunIndex
    logs: LogSignal = field(default_factory=LogSignal)
    telemetry: Telemetry = field(default_factory=Telemetry)

    @property
    def settings(self) -> ServerSettings:
        return self.config.settings

    @property
    def tokens(self) -> ServerTokens:
        return self.config.tokens

    @property
    def home(self) -> Path:
        return self.config.engine.home


@contextlib.asynccontextmanager
async def _temporal(config: ControlConfig) -> AsyncIterator[Client]:
    if config.temporal_address is not None:
        yield await connect(config.temporal_address)
        return
    async with engine_session(config.engine, owner="server") as session:
        yield session.client


@contextlib.asynccontextmanager
async def open_control_plane(
    config: ControlConfig, store: ContentStore
) -> AsyncIterator[ControlPlane]:
    db = await anyio.to_thread.run_sync(open_database, config.database_url)
    try:
        async with _temporal(config) as client:
            index = RunIndex(db, client, sync_interval=config.settings.index_sync_interval)
            yield ControlPlane(config=config, db=db, client=client, store=store, index=index)
    finally:
        db.close()
