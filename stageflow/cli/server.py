"""``stageflow server``: the data server (persisted artifacts, chunked resumable uploads)."""

from __future__ import annotations

import typer
import uvicorn

from stageflow.cli.common import console
from stageflow.cli.dataplane import deployment_token
from stageflow.server.app import create_server_app
from stageflow.server.settings import ServerSettings
from stageflow.settings import EngineSettings, TransferSettings
from stageflow.transfer.store import ContentStore


def server(
    bind: str | None = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default 8700)."),
) -> None:
    """Run the data server: workers push persisted artifacts here and fetch them back."""
    settings = ServerSettings()
    updates = {
        key: value for key, value in {"bind": bind, "port": port}.items() if value is not None
    }
    settings = settings.model_copy(update=updates)
    home = EngineSettings().home
    store = ContentStore(
        settings.data_dir or home / "server", chunk_size=TransferSettings().chunk_size
    )
    token = deployment_token(home)
    app = create_server_app(store, token=token, max_upload_bytes=settings.max_upload_bytes)
    console.print(f"stageflow server: http://{settings.bind}:{settings.port} (store {store.root})")
    uvicorn.run(app, host=settings.bind, port=settings.port, log_level="warning")
