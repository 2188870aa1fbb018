"""The data plane of a CLI process: the deployment token, this process's store and server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from stageflow.cli.common import err_console
from stageflow.settings import DataSettings, EngineSettings, TransferSettings
from stageflow.transfer.auth import load_or_create_token
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane, serve_store

__all__ = ["deployment_token", "embedded_data_server", "staging_store", "worker_data_plane"]


def deployment_token(home: Path) -> str:
    """The token every stageflow process of a deployment shares; made on first start."""
    token, path, created = load_or_create_token(home)
    if created:
        err_console.print(
            f"generated the deployment token in {path} (mode 0600); give it to the other "
            "machines' stageflow processes as STAGEFLOW_TOKEN"
        )
    return token


def staging_store(settings: EngineSettings) -> ContentStore:
    """This machine's content-addressed staging store (``STAGEFLOW_DATA_STAGING_DIR``)."""
    directory = DataSettings().staging_dir or settings.home / "staging"
    return ContentStore(directory, chunk_size=TransferSettings().chunk_size)


@asynccontextmanager
async def worker_data_plane(settings: EngineSettings) -> AsyncIterator[DataPlane]:
    """This worker's staging store, served to peers for as long as the context lasts."""
    data, transfer = DataSettings(), TransferSettings()
    store = staging_store(settings)
    token = deployment_token(settings.home)
    async with DataPlane(store=store, token=token, settings=data, transfer=transfer) as plane:
        yield plane


@asynccontextmanager
async def embedded_data_server(settings: EngineSettings) -> AsyncIterator[str]:
    """The data server of the embedded default (a store under <home>/server, the lake under
    <home>/lake); yields its URL."""
    store = ContentStore(settings.home / "server", chunk_size=TransferSettings().chunk_size)
    token = deployment_token(settings.home)
    server, port = await serve_store(
        store,
        token=token,
        host="127.0.0.1",
        port=0,
        accept_uploads=True,
        lake_dir=settings.home / "lake",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()
