"""``/healthz`` (the process answers) and ``/readyz`` (the control DB and Temporal answer).

Both are open, for load balancers and orchestrators; neither says more than ok or what is down.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from stageflow.server.control import ControlPlane

__all__ = ["router"]

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 3.0


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    database: str
    temporal: str
    error: str | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


async def _check_database(control: ControlPlane) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(control.db.ping), _CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"[:300]
    return "ok"


async def _check_temporal(control: ControlPlane) -> str:
    try:
        await control.client.service_client.check_health(
            timeout=timedelta(seconds=_CHECK_TIMEOUT_S)
        )
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"[:300]
    return "ok"


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(connection: HTTPConnection) -> Readiness | JSONResponse:
    control: ControlPlane | None = getattr(connection.app.state, "control", None)
    if control is None:
        body = Readiness(
            status="not ready", database="starting", temporal="starting", error="starting up"
        )
        return JSONResponse(body.model_dump(), status_code=503)
    database, temporal = await asyncio.gather(_check_database(control), _check_temporal(control))
    if database == "ok" and temporal == "ok":
        return Readiness(status="ready", database=database, temporal=temporal)
    down = ", ".join(
        f"{name} {state}"
        for name, state in (("DB", database), ("Temporal", temporal))
        if state != "ok"
    )
    body = Readiness(
        status="not ready", database=database, temporal=temporal, error=f"not ready: {down}"
    )
    return JSONResponse(body.model_dump(), status_code=503)
