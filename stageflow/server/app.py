"""The ``stageflow server`` application: the data server and the control plane in one process.

Routes: the data plane under ``/v1`` (persisted artifacts, chunked resumable uploads; see
docs/data-plane.md), the control-plane API under ``/api/v1`` (docs/control-plane.md),
``/metrics``, ``/healthz`` and ``/readyz``, OpenAPI at ``/docs`` and ``/openapi.json``. With no
``control`` config the app is the data server alone, as embedded processes use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from stageflow import __version__
from stageflow.lake.service import default_lake_dir
from stageflow.server.api import control_router
from stageflow.server.control import ControlConfig, open_control_plane
from stageflow.server.dashboard import mount_dashboard
from stageflow.server.errors import install_error_handlers
from stageflow.server.limits import ApiRequestLimits
from stageflow.transfer.http_app import create_data_app, data_router
from stageflow.transfer.store import ContentStore

__all__ = ["create_server_app"]

_DESCRIPTION = (
    "Pipelines, runs, stages, logs, workers and artifacts of a stageflow deployment. "
    "Send `Authorization: Bearer <token>`: the admin token may do everything, the read-only "
    'token may only GET. Errors are `{"error": "<what to do>"}`.'
)


def create_server_app(
    store: ContentStore,
    *,
    token: str,
    max_upload_bytes: int,
    control: ControlConfig | None = None,
    lake_dir: Path | None = None,
) -> FastAPI:
    """The server app. The lake (``/v1/lake``) lives in ``lake_dir``; with a ``control`` config
    it defaults to ``STAGEFLOW_SERVER_LAKE_DIR`` or ``lake/`` beside the store."""
    if control is None:
        app = create_data_app(
            store, token=token, max_upload_bytes=max_upload_bytes, lake_dir=lake_dir
        )

        @app.get("/healthz", include_in_schema=False)
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        return app

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_control_plane(control, store) as plane:
            app.state.control = plane
            try:
                yield
            finally:
                app.state.control = None

    app = FastAPI(
        title="stageflow",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    lake_dir = lake_dir or control.settings.lake_dir or default_lake_dir(store.root)
    app.include_router(
        data_router(store, token=token, max_upload_bytes=max_upload_bytes, lake_dir=lake_dir)
    )
    app.include_router(control_router())
    app.add_middleware(ApiRequestLimits)
    mount_dashboard(app)
    return app
