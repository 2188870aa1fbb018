"""The ``stageflow server`` application: the data server (and, later, the control-plane API).

It holds the persisted artifacts of every run in its own content-addressed store and accepts
chunked, resumable uploads from workers; ``/healthz`` answers without a token.
"""

from __future__ import annotations

from fastapi import FastAPI

from stageflow.transfer.http_app import create_data_app
from stageflow.transfer.store import ContentStore

__all__ = ["create_server_app"]


def create_server_app(store: ContentStore, *, token: str, max_upload_bytes: int) -> FastAPI:
    app = create_data_app(store, token=token, max_upload_bytes=max_upload_bytes)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
