"""``stageflow server``: the data server and the control plane (REST + WebSocket API)."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn

from stageflow.cli.common import EXIT_INVALID, console, err_console
from stageflow.errors import StageflowError
from stageflow.server.app import create_server_app
from stageflow.server.control import ControlConfig
from stageflow.server.db import default_database_url
from stageflow.server.settings import load_server_settings
from stageflow.server.tokens import READ_TOKEN_ENV, load_server_tokens
from stageflow.settings import EngineSettings, TransferSettings
from stageflow.transfer.auth import TOKEN_ENV
from stageflow.transfer.store import ContentStore


def server(
    bind: str | None = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default 8700)."),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="Control DB (default: STAGEFLOW_SERVER_DATABASE_URL, else SQLite under the data "
        "dir); e.g. postgresql://user:pass@host/stageflow.",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML file of server settings (STAGEFLOW_SERVER_* win over it)."
    ),
) -> None:
    """Run the server: the API under /api/v1 (docs at /docs), /metrics, and the data server."""
    try:
        settings = load_server_settings(config)
    except StageflowError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    updates = {
        key: value
        for key, value in {"bind": bind, "port": port, "database_url": database_url}.items()
        if value is not None
    }
    settings = settings.model_copy(update=updates)
    engine = EngineSettings()
    data_dir = settings.data_dir or engine.home / "server"
    store = ContentStore(data_dir, chunk_size=TransferSettings().chunk_size)
    try:
        read = settings.read_token.get_secret_value() if settings.read_token else None
        tokens = load_server_tokens(engine.home, read)
    except StageflowError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    admin_from = tokens.admin_file or f"${TOKEN_ENV}"
    read_from = tokens.read_file or f"${READ_TOKEN_ENV}"
    lines = []
    if tokens.admin_file is not None and tokens.admin_file in tokens.created:
        lines.append(
            f"generated the deployment token in {tokens.admin_file} (mode 0600); give it to the "
            f"other machines' stageflow processes as {TOKEN_ENV}"
        )
    if tokens.read_file is not None and tokens.read_file in tokens.created:
        lines.append(f"generated the read-only token in {tokens.read_file} (mode 0600)")
    lines.append(f"admin token: {admin_from} (give it to workers as {TOKEN_ENV})")
    lines.append(f"read-only token: {read_from} (GET only: dashboards, Prometheus)")
    for line in lines:  # paths only: a token's value is never printed
        err_console.print(line, soft_wrap=True, highlight=False, markup=False)
    control = ControlConfig(
        database_url=settings.database_url or default_database_url(data_dir),
        tokens=tokens,
        settings=settings,
        engine=engine,
    )
    app = create_server_app(
        store, token=tokens.admin, max_upload_bytes=settings.max_upload_bytes, control=control
    )
    url = f"http://{settings.bind}:{settings.port}"
    console.print(
        f"stageflow server: {url} (API docs {url}/docs, store {store.root})",
        soft_wrap=True,
        highlight=False,
    )
    uvicorn.run(
        app, host=settings.bind, port=settings.port, log_level="warning", ws="websockets-sansio"
    )
