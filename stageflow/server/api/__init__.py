"""The control-plane API: one module per resource, assembled here under ``/api/v1``.

Every ``/api/v1`` route needs a token (``deps.authorize``: read-only may GET, admin may do
all); the log WebSocket checks its own (browsers cannot send headers on one). ``/metrics``
needs a token too; ``/healthz`` and ``/readyz`` are open.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from stageflow.server.api import (
    artifacts,
    events,
    health,
    logs,
    metrics,
    pipelines,
    runs,
    stages,
    workers,
)
from stageflow.server.api.deps import authorize

__all__ = ["API_PREFIX", "control_router"]

API_PREFIX = "/api/v1"


def control_router() -> APIRouter:
    """Every control-plane route, ready to include in the server app."""
    root = APIRouter()
    root.include_router(health.router)
    guarded = APIRouter(dependencies=[Depends(authorize)])
    for module in (pipelines, runs, stages, logs, workers, artifacts, events, metrics):
        guarded.include_router(module.router, prefix=API_PREFIX)
    guarded.include_router(metrics.prometheus_router)
    root.include_router(guarded)
    root.include_router(logs.stream_router, prefix=API_PREFIX)
    return root
