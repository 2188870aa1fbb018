"""``/pipelines``: register (validated, YAML or JSON), list and show pipeline specs.

The body is parsed by the same code as ``stageflow validate`` (JSON is YAML), so an invalid
spec is answered 422 with every problem's line, column and field, and nothing is stored.
Registering a name again replaces its spec; runs already started keep the spec they began with.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import yaml
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from stageflow.errors import SpecError
from stageflow.server.api.deps import ERRORS, Control
from stageflow.server.errors import ApiError, ErrorBody
from stageflow.server.models import PipelineRecord, utcnow
from stageflow.spec.validate import parse_pipeline

__all__ = ["PipelineOut", "load_registered", "router"]

log = logging.getLogger("stageflow.server")

router = APIRouter(tags=["pipelines"], responses=ERRORS)

_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A pipeline spec, as YAML text or a JSON object (as in `stageflow run`).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


class PipelineOut(BaseModel):
    name: str
    description: str = ""
    params: dict[str, Any]
    stages: list[str] = Field(description="Stage names, in spec order.")
    schedule: str | None = None
    spec: dict[str, Any] = Field(description="The validated spec, as plain data.")
    created_at: datetime
    updated_at: datetime


class PipelineList(BaseModel):
    pipelines: list[PipelineOut]


def _out(row: PipelineRecord) -> PipelineOut:
    spec = row.spec
    return PipelineOut(
        name=row.name,
        description=str(spec.get("description", "")),
        params=dict(spec.get("params") or {}),
        stages=list(spec.get("stages") or {}),
        schedule=spec.get("schedule"),
        spec=spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def load_registered(session: Session, name: str) -> PipelineRecord:
    row = session.scalar(select(PipelineRecord).where(PipelineRecord.name == name))
    if row is None:
        raise ApiError(404, f"no pipeline {name!r}: register it with POST /api/v1/pipelines first")
    return row


def _validated(text: str) -> dict[str, Any]:
    """The spec as plain data; anything the validator cannot read is the client's 422."""
    try:
        return parse_pipeline(text, "<request body>").to_dict()
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        raise ApiError(422, f"the spec is not valid YAML or JSON: {exc}") from None
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        # The validator failed to locate a problem: still a bad spec, but say it loudly.
        log.warning("spec validation crashed (%s: %s); answered 422", type(exc).__name__, exc)
        raise ApiError(
            422, f"invalid pipeline spec (and the validator could not locate it: {exc!r:.200})"
        ) from None


@router.post(
    "/pipelines",
    response_model=PipelineOut,
    status_code=201,
    openapi_extra=_SPEC_BODY,
    responses={200: {"model": PipelineOut, "description": "Replaced an existing spec."}},
)
async def register_pipeline(request: Request, response: Response, control: Control) -> PipelineOut:
    """Validate a spec and store it under its ``name`` (201 new, 200 replaced)."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "the spec must be UTF-8 text (YAML or JSON)") from None
    if not text.strip():
        raise ApiError(422, "empty body: send a pipeline spec (YAML or JSON)")
    spec = _validated(text)

    def store(session: Session) -> tuple[PipelineOut, bool]:
        now = utcnow()
        row = session.scalar(select(PipelineRecord).where(PipelineRecord.name == spec["name"]))
        created = row is None
        if row is None:
            row = PipelineRecord(name=spec["name"], spec=spec, created_at=now, updated_at=now)
            session.add(row)
        else:
            row.spec, row.updated_at = spec, now
        session.flush()
        return _out(row), created

    out, created = await control.db.run(store)
    response.status_code = 201 if created else 200
    return out


@router.get("/pipelines", response_model=PipelineList)
async def list_pipelines(control: Control) -> PipelineList:
    """Every registered pipeline, by name."""

    def read(session: Session) -> PipelineList:
        rows = session.scalars(select(PipelineRecord).order_by(PipelineRecord.name))
        return PipelineList(pipelines=[_out(row) for row in rows])

    return await control.db.run(read)


@router.get(
    "/pipelines/{name}",
    response_model=PipelineOut,
    responses={404: {"model": ErrorBody, "description": "No such pipeline."}},
)
async def show_pipeline(name: str, control: Control) -> PipelineOut:
    return await control.db.run(lambda s: _out(load_registered(s, name)))
