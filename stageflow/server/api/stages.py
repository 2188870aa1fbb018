"""``/runs/{id}/stages``: each stage's status, attempts, timings, outputs, artifacts, progress.

Status, outputs and timings come from the workflow's state query; live progress from the
heartbeats of the stage activities in flight (Temporal's describe); transfer progress from the
latest ``progress`` event workers posted. Artifact refs found in outputs are recorded in the
artifact catalog on the way, so ``/artifacts/{sha}`` knows which run and stage made them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stageflow.engine.runs import live_activities
from stageflow.server.api.deps import ERRORS, Control
from stageflow.server.api.runs import RunId
from stageflow.server.catalog import ArtifactRef, catalog_refs, refs_in
from stageflow.server.errors import ErrorBody
from stageflow.server.models import StageEvent

__all__ = ["router"]

router = APIRouter(tags=["stages"], responses=ERRORS)

_ACTIVITY_ID = re.compile(r"^(?P<stage>.+?)(?:\[(?P<index>\d+)\])?(?:@near)?$")


class LiveProgress(BaseModel):
    instance: int | None = Field(description="Matrix instance, or null for a plain stage.")
    state: str = Field(description="Temporal's view: scheduled, started, cancel_requested...")
    attempt: int
    progress: dict[str, Any] | None = Field(
        None, description="What the stage last reported with ctx.progress()."
    )
    last_failure: str | None = None


class StageOut(BaseModel):
    name: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    task_queue: str
    worker: str | None
    error: str | None
    error_type: str | None
    reused: bool = Field(description="Kept from an earlier execution by a retry.")
    instances: int
    instances_done: int
    outputs: Any = Field(description="The stage's outputs (a list, in matrix order, for a matrix).")
    artifacts: list[ArtifactRef]
    progress: list[LiveProgress] = Field(description="Attempts in flight now.")
    transfer: dict[str, Any] | None = Field(
        None, description="The detail of the latest `progress` event a worker posted."
    )


class StageList(BaseModel):
    run_id: str
    status: str
    stages: list[StageOut]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _latest_progress(session: Session, run_id: str) -> dict[str, dict[str, Any]]:
    latest = (
        select(func.max(StageEvent.id))
        .where(StageEvent.run_id == run_id, StageEvent.status == "progress")
        .group_by(StageEvent.stage)
    )
    rows = session.scalars(select(StageEvent).where(StageEvent.id.in_(latest)))
    return {row.stage: dict(row.detail or {}) for row in rows}


@router.get(
    "/runs/{run_id}/stages",
    response_model=StageList,
    responses={404: {"model": ErrorBody, "description": "No such run."}},
)
async def list_stages(run_id: RunId, control: Control) -> StageList:
    state = await control.index.state(run_id)
    live = (
        await live_activities(control.client, run_id)
        if state.status
        in (
            "running",
            "paused",
        )
        else {}
    )
    progress: dict[str, list[LiveProgress]] = {}
    for activity_id, activity in live.items():
        match = _ACTIVITY_ID.match(activity_id)
        if match is None:
            continue
        index = match.group("index")
        progress.setdefault(match.group("stage"), []).append(
            LiveProgress(
                instance=int(index) if index is not None else None,
                state=activity.state,
                attempt=activity.attempt,
                progress=activity.progress,
                last_failure=activity.last_failure,
            )
        )
    refs = {name: refs_in(st.outputs) for name, st in state.stages.items()}

    def read(session: Session) -> dict[str, dict[str, Any]]:
        for name, found in refs.items():
            catalog_refs(session, found, run_id=run_id, stage=name)
        return _latest_progress(session, run_id)

    transfers = await control.db.run(read)
    stages = []
    for name, st in state.stages.items():
        started, finished = _time(st.started_at), _time(st.finished_at)
        stages.append(
            StageOut(
                name=name,
                status=st.status,
                attempts=st.attempts,
                started_at=started,
                finished_at=finished,
                duration_s=(finished - started).total_seconds() if started and finished else None,
                task_queue=st.task_queue,
                worker=st.worker,
                error=st.error,
                error_type=st.error_type,
                reused=st.reused,
                instances=st.instances,
                instances_done=st.instances_done,
                outputs=st.outputs,
                artifacts=refs[name],
                progress=progress.get(name, []),
                transfer=transfers.get(name),
            )
        )
    return StageList(run_id=run_id, status=state.status, stages=stages)
