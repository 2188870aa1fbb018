"""``/runs``: start runs of registered pipelines, list and show them, and steer them.

Every action goes through ``stageflow.engine.runs`` (the CLI's code path), so the API and
``stageflow runs`` behave alike. Listing reads the run index (refreshed from Temporal, see
``server.index``) and pages by an opaque cursor; showing a run asks Temporal for its live
state and falls back to the index for runs Temporal no longer holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from stageflow.engine import runs as engine_runs
from stageflow.engine.types import RunState
from stageflow.engine.workflow import PipelineWorkflow
from stageflow.errors import RunNotFoundError
from stageflow.server.api.deps import ERRORS, Control, Responses
from stageflow.server.api.pipelines import load_registered
from stageflow.server.control import ControlPlane
from stageflow.server.errors import ApiError, ErrorBody
from stageflow.server.models import RunRecord
from stageflow.spec.model import Pipeline

__all__ = ["ensure_run", "router"]

router = APIRouter(tags=["runs"], responses=ERRORS)

RunId = Annotated[str, Field(min_length=1, max_length=255)]
_NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No such run."}}
_CONFLICT: Responses = {
    409: {"model": ErrorBody, "description": "The run's state does not allow it."}
}
_SIGNALS = frozenset(
    name
    for name in dir(PipelineWorkflow)
    if getattr(getattr(PipelineWorkflow, name), "__temporal_signal_definition", None) is not None
)


class StartRun(BaseModel):
    params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the pipeline's declared params."
    )
    run_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="Use this run id (default: <pipeline>-<utc time>-<random>).",
    )


class RunStarted(BaseModel):
    run_id: str
    pipeline: str
    status: str
    params: dict[str, Any]


class RunSummary(BaseModel):
    run_id: str
    pipeline: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    updated_at: datetime


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class StageBrief(BaseModel):
    status: str
    attempts: int
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class RunDetail(BaseModel):
    run_id: str
    pipeline: str
    status: str
    paused: bool
    params: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    stages: dict[str, StageBrief]
    source: Literal["temporal", "index"] = Field(
        description="temporal: live state; index: Temporal no longer holds the run."
    )


class ActionResult(BaseModel):
    run_id: str
    action: str
    accepted: bool = True


class ApproveBody(BaseModel):
    stage: str | None = Field(None, description="The gated stage; null approves every one.")


class SignalBody(BaseModel):
    payload: Any = Field(None, description="The signal's argument (none when null).")


# ---------------------------------------------------------------------------- helpers
async def ensure_run(control: ControlPlane, run_id: str) -> WorkflowHandle[Any, Any]:
    """The run's handle; 404 when Temporal does not know it."""
    handle = engine_runs.run_handle(control.client, run_id)
    try:
        await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFoundError(run_id) from None
        raise
    return handle


def _encode_cursor(row: RunRecord) -> str:
    raw = json.dumps([row.started_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        started, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(started), int(row_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "bad cursor: pass the next_cursor of a previous page, or none for the first"
        ) from None


def _summary(row: RunRecord) -> RunSummary:
    return RunSummary(
        run_id=row.run_id,
        pipeline=row.pipeline,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
    )


def _detail(state: RunState, in_temporal: bool) -> RunDetail:
    return RunDetail(
        run_id=state.run_id,
        pipeline=state.pipeline,
        status=state.status,
        paused=state.paused,
        params=state.params,
        started_at=datetime.fromisoformat(state.started_at) if state.started_at else None,
        finished_at=datetime.fromisoformat(state.finished_at) if state.finished_at else None,
        stages={
            name: StageBrief(
                status=st.status,
                attempts=st.attempts,
                error=st.error,
                started_at=st.started_at,
                finished_at=st.finished_at,
            )
            for name, st in state.stages.items()
        },
        source="temporal" if in_temporal else "index",
    )


# ---------------------------------------------------------------------------- routes
@router.post(
    "/pipelines/{name}/runs",
    response_model=RunStarted,
    status_code=201,
    responses={
        404: {"model": ErrorBody, "description": "No such pipeline."},
        409: {"model": ErrorBody, "description": "A run with this id exists."},
    },
)
async def start_run(name: str, body: StartRun, control: Control) -> RunStarted:
    """Start a run of a registered pipeline with ``params`` overriding its defaults."""
    record = await control.db.run(lambda s: load_registered(s, name))
    try:
        pipeline = Pipeline.model_validate(record.spec).with_params(body.params)
    except KeyError as exc:
        raise ApiError(422, f"pipeline {name!r}: {exc.args[0]}") from None
    except ValidationError as exc:
        raise ApiError(
            409, f"the stored spec of {name!r} no longer validates ({exc}); register it again"
        ) from None
    run_id = body.run_id or engine_runs.new_run_id(pipeline.name)
    run_input = engine_runs.compile_run(
        pipeline, run_id=run_id, heartbeat_timeout=control.config.engine.heartbeat_timeout
    )
    try:
        await engine_runs.start_run(control.client, run_input)
    except WorkflowAlreadyStartedError:
        raise ApiError(
            409, f"run {run_id!r} exists: pick another run_id, or retry it with /retry"
        ) from None
    await control.index.record_start(run_id, pipeline.name, dict(pipeline.params))
    return RunStarted(
        run_id=run_id, pipeline=pipeline.name, status="running", params=pipeline.params
    )


@router.get("/runs", response_model=RunPage, responses={400: {"model": ErrorBody}})
async def list_runs(
    control: Control,
    pipeline: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> RunPage:
    """Runs newest first, optionally of one pipeline and/or in one status."""
    after = _decode_cursor(cursor) if cursor else None
    await control.index.sync()

    def read(session: Session) -> RunPage:
        query = select(RunRecord)
        if pipeline:
            query = query.where(RunRecord.pipeline == pipeline)
        if status:
            query = query.where(RunRecord.status == status)
        if after is not None:
            started, row_id = after
            query = query.where(
                or_(
                    RunRecord.started_at < started,
                    and_(RunRecord.started_at == started, RunRecord.id < row_id),
                )
            )
        query = query.order_by(RunRecord.started_at.desc(), RunRecord.id.desc())
        rows = list(session.scalars(query.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return RunPage(
            runs=[_summary(row) for row in rows],
            next_cursor=_encode_cursor(rows[-1]) if more and rows else None,
        )

    return await control.db.run(read)


@router.get("/runs/{run_id}", response_model=RunDetail, responses=_NOT_FOUND)
async def show_run(run_id: RunId, control: Control) -> RunDetail:
    """The run's state: status, params and each stage's status and attempts."""
    try:
        return _detail(*await control.index.read(run_id))
    except RunNotFoundError:
        row = await control.db.run(
            lambda s: s.scalar(select(RunRecord).where(RunRecord.run_id == run_id))
        )
        if row is None:
            raise
    return RunDetail(
        run_id=row.run_id,
        pipeline=row.pipeline,
        status=row.status,
        paused=row.status == "paused",
        params=row.params,
        started_at=row.started_at,
        finished_at=row.finished_at,
        stages={},
        source="index",
    )


@router.post(
    "/runs/{run_id}/cancel", response_model=ActionResult, responses={**_NOT_FOUND, **_CONFLICT}
)
async def cancel_run(run_id: RunId, control: Control) -> ActionResult:
    """Cancel running stages; nothing new starts. The run ends ``cancelled``."""
    await ensure_run(control, run_id)
    await engine_runs.cancel_run(control.client, run_id)
    return ActionResult(run_id=run_id, action="cancel")


@router.post(
    "/runs/{run_id}/pause", response_model=ActionResult, responses={**_NOT_FOUND, **_CONFLICT}
)
async def pause_run(run_id: RunId, control: Control) -> ActionResult:
    """Start no new stage until resume; running ones finish."""
    await ensure_run(control, run_id)
    await engine_runs.pause_run(control.client, run_id)
    await control.index.record_status(run_id, "paused")
    return ActionResult(run_id=run_id, action="pause")


@router.post(
    "/runs/{run_id}/resume", response_model=ActionResult, responses={**_NOT_FOUND, **_CONFLICT}
)
async def resume_run(run_id: RunId, control: Control) -> ActionResult:
    await ensure_run(control, run_id)
    await engine_runs.resume_run(control.client, run_id)
    await control.index.record_status(run_id, "running")
    return ActionResult(run_id=run_id, action="resume")


@router.post(
    "/runs/{run_id}/retry", response_model=ActionResult, responses={**_NOT_FOUND, **_CONFLICT}
)
async def retry_run(run_id: RunId, control: Control) -> ActionResult:
    """Run a failed or cancelled run again under the same id, keeping what succeeded."""
    await engine_runs.retry_run(control.client, run_id)
    state = await engine_runs.run_state(control.client, run_id)
    await control.index.record_start(run_id, state.pipeline, dict(state.params))
    return ActionResult(run_id=run_id, action="retry")


@router.post(
    "/runs/{run_id}/approve", response_model=ActionResult, responses={**_NOT_FOUND, **_CONFLICT}
)
async def approve_run(run_id: RunId, body: ApproveBody, control: Control) -> ActionResult:
    """Open the gate of ``stage`` (or of every stage waiting for approval)."""
    state = await control.index.state(run_id)
    if body.stage is not None and body.stage not in state.stages:
        raise ApiError(
            404, f"run {run_id!r} has no stage {body.stage!r} (stages: {', '.join(state.stages)})"
        )
    await engine_runs.approve_run(control.client, run_id, body.stage)
    return ActionResult(run_id=run_id, action="approve")


@router.post(
    "/runs/{run_id}/signal/{name}",
    response_model=ActionResult,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def signal_run(run_id: RunId, name: str, body: SignalBody, control: Control) -> ActionResult:
    """Send one of the pipeline workflow's signals (``pause``, ``resume``, ``approve``)."""
    if name not in _SIGNALS:
        raise ApiError(404, f"no signal {name!r}: the workflow has {', '.join(sorted(_SIGNALS))}")
    handle = await ensure_run(control, run_id)
    args = [] if body.payload is None else [body.payload]
    try:
        await handle.signal(name, *args)
    except RPCError as exc:
        raise ApiError(409, f"cannot signal run {run_id!r}: {exc.message}") from None
    return ActionResult(run_id=run_id, action=f"signal:{name}")
