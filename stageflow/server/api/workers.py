"""``/workers``: the registry workers keep up to date, and what the API shows of it.

Registration is an idempotent upsert (a restarted worker registers again under its id);
heartbeats carry the worker's state and load. ``lost`` is never stored: a worker that has
not heartbeat for 3 times ``STAGEFLOW_SERVER_HEARTBEAT_INTERVAL`` is shown as lost, and comes
back by itself with its next heartbeat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from stageflow.server.api.deps import ERRORS, Control, Responses
from stageflow.server.errors import ApiError, ErrorBody
from stageflow.server.models import WorkerRecord, utcnow

__all__ = ["LOST_AFTER_INTERVALS", "count_by_state", "derived_state", "router", "served_queues"]

router = APIRouter(tags=["workers"], responses=ERRORS)

LOST_AFTER_INTERVALS = 3
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_Name = Annotated[str, Field(min_length=1, max_length=255)]
_NOT_FOUND: Responses = {
    404: {"model": ErrorBody, "description": "No such worker: register first."}
}


class Gpu(BaseModel):
    index: int = Field(ge=0, le=_INT32)
    name: str = Field("", max_length=255)
    memory_bytes: int | None = Field(None, ge=0, le=_INT64)


class WorkerRegistration(BaseModel):
    worker_id: _Name
    host: _Name
    queues: list[Annotated[str, Field(max_length=255)]] = Field(default_factory=list)
    tags: list[Annotated[str, Field(max_length=255)]] = Field(default_factory=list)
    cpus: int | None = Field(None, ge=0, le=_INT32)
    memory_bytes: int | None = Field(None, ge=0, le=_INT64)
    disk_bytes: int | None = Field(None, ge=0, le=_INT64)
    gpus: list[Gpu] = Field(default_factory=list)
    cost_per_hour: float | None = Field(None, ge=0, allow_inf_nan=False)
    data_url: str | None = Field(None, max_length=1000)


class WorkerLoad(BaseModel):
    """Known keys are checked; others a newer worker sends are kept as they are."""

    model_config = ConfigDict(extra="allow")

    cpu_percent: float | None = Field(None, allow_inf_nan=False)
    memory_percent: float | None = Field(None, allow_inf_nan=False)
    running_stages: int | None = Field(None, ge=0, le=_INT32)
    disk_free_bytes: int | None = Field(None, ge=0, le=_INT64)
    gpu_util: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=list)


class Heartbeat(BaseModel):
    state: Literal["alive", "draining", "stopped"] = "alive"
    load: WorkerLoad | None = None


class WorkerOut(BaseModel):
    worker_id: str
    host: str
    queues: list[str]
    tags: list[str]
    cpus: int | None
    memory_bytes: int | None
    disk_bytes: int | None
    gpus: list[Gpu]
    cost_per_hour: float | None
    data_url: str | None
    state: Literal["alive", "draining", "stopped", "lost"] = Field(
        description="As reported, or lost: no heartbeat for 3 intervals."
    )
    reported_state: str
    load: dict[str, Any] | None
    registered_at: datetime
    last_heartbeat: datetime
    seconds_since_heartbeat: float


class WorkerList(BaseModel):
    workers: list[WorkerOut]
    heartbeat_interval: float
    lost_after: float = Field(description="Seconds of silence after which a worker is lost.")


def derived_state(row: WorkerRecord, now: datetime, interval: float) -> str:
    silent = (now - row.last_heartbeat).total_seconds()
    if row.state != "stopped" and silent > LOST_AFTER_INTERVALS * interval:
        return "lost"
    return row.state


def _out(row: WorkerRecord, now: datetime, interval: float) -> WorkerOut:
    return WorkerOut(
        worker_id=row.worker_id,
        host=row.host,
        queues=list(row.queues),
        tags=list(row.tags),
        cpus=row.cpus,
        memory_bytes=row.memory_bytes,
        disk_bytes=row.disk_bytes,
        gpus=[Gpu.model_validate(gpu) for gpu in row.gpus],
        cost_per_hour=row.cost_per_hour,
        data_url=row.data_url,
        state=derived_state(row, now, interval),  # type: ignore[arg-type]
        reported_state=row.state,
        load=row.load,
        registered_at=row.registered_at,
        last_heartbeat=row.last_heartbeat,
        seconds_since_heartbeat=max(0.0, (now - row.last_heartbeat).total_seconds()),
    )


def _find(session: Session, worker_id: str) -> WorkerRecord:
    row = session.scalar(select(WorkerRecord).where(WorkerRecord.worker_id == worker_id))
    if row is None:
        raise ApiError(
            404, f"no worker {worker_id!r}: register it with POST /api/v1/workers/register"
        )
    return row


@router.post("/workers/register", response_model=WorkerOut)
async def register_worker(body: WorkerRegistration, control: Control) -> WorkerOut:
    """Add or update a worker; its state becomes ``alive``."""
    interval = control.settings.heartbeat_interval

    def upsert(session: Session) -> WorkerOut:
        now = utcnow()
        row = session.scalar(select(WorkerRecord).where(WorkerRecord.worker_id == body.worker_id))
        fields = body.model_dump(exclude={"worker_id"}, mode="json")
        if row is None:
            row = WorkerRecord(
                worker_id=body.worker_id,
                registered_at=now,
                last_heartbeat=now,
                state="alive",
                load=None,
                **fields,
            )
            session.add(row)
        else:
            for key, value in fields.items():
                setattr(row, key, value)
            row.state, row.last_heartbeat = "alive", now
        session.flush()
        return _out(row, now, interval)

    return await control.db.run(upsert)


@router.post("/workers/{worker_id}/heartbeat", response_model=WorkerOut, responses=_NOT_FOUND)
async def heartbeat(worker_id: str, body: Heartbeat, control: Control) -> WorkerOut:
    """The worker is there, in ``state``, with this ``load``. 404: register (again) first."""
    interval = control.settings.heartbeat_interval

    def beat(session: Session) -> WorkerOut:
        now = utcnow()
        row = _find(session, worker_id)
        row.state, row.last_heartbeat = body.state, now
        if body.load is not None:
            row.load = body.load.model_dump(mode="json")
        return _out(row, now, interval)

    return await control.db.run(beat)


@router.get("/workers", response_model=WorkerList)
async def list_workers(
    control: Control,
    state: Annotated[
        Literal["alive", "draining", "stopped", "lost"] | None,
        Query(description="Only workers in this (derived) state."),
    ] = None,
) -> WorkerList:
    interval = control.settings.heartbeat_interval

    def read(session: Session) -> WorkerList:
        now = utcnow()
        rows = session.scalars(select(WorkerRecord).order_by(WorkerRecord.worker_id))
        workers = [_out(row, now, interval) for row in rows]
        if state is not None:
            workers = [worker for worker in workers if worker.state == state]
        return WorkerList(
            workers=workers,
            heartbeat_interval=interval,
            lost_after=LOST_AFTER_INTERVALS * interval,
        )

    return await control.db.run(read)


@router.get("/workers/{worker_id}", response_model=WorkerOut, responses=_NOT_FOUND)
async def show_worker(worker_id: str, control: Control) -> WorkerOut:
    interval = control.settings.heartbeat_interval
    return await control.db.run(lambda s: _out(_find(s, worker_id), utcnow(), interval))


def count_by_state(session: Session, interval: float) -> dict[str, int]:
    """Workers by derived state (for /metrics)."""
    now = utcnow()
    counts: dict[str, int] = {}
    for row in session.scalars(select(WorkerRecord)):
        key = derived_state(row, now, interval)
        counts[key] = counts.get(key, 0) + 1
    return counts


def served_queues(session: Session, interval: float) -> list[str]:
    """The task queues that workers not lost or stopped serve (for queue backlog)."""
    now = utcnow()
    queues: dict[str, None] = {}
    for row in session.scalars(select(WorkerRecord)):
        if derived_state(row, now, interval) in ("alive", "draining"):
            queues.update(dict.fromkeys(str(queue) for queue in row.queues))
    return list(queues)
