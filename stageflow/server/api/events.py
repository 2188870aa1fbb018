"""``POST /events``: what workers report about stage attempts, and the metrics it feeds.

Statuses: ``started``, ``succeeded``, ``failed``, ``cancelled`` (lifecycle: stored once per
run/stage/instance/attempt, re-sends are dropped), ``progress`` (transfer or stage progress;
every one is stored, the latest is shown) and ``metrics`` (numbers a stage reports, shown by
``/runs/{id}/metrics``). ``detail`` is free JSON; these keys mean something here:

* ``duration_s`` on a finished attempt (else the time since its ``started`` event is used);
* ``bytes`` with ``seconds`` or ``rate`` on a finished attempt: a transfer, counted in the
  transfer metrics;
* any artifact refs (e.g. under ``outputs``) are recorded in the artifact catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from stageflow.server.api.deps import ERRORS, Control, UtcDatetime
from stageflow.server.catalog import catalog_refs, refs_in
from stageflow.server.models import StageEvent
from stageflow.server.telemetry import Telemetry

__all__ = ["LIFECYCLE", "router"]

router = APIRouter(tags=["events"], responses=ERRORS)

LIFECYCLE = frozenset({"started", "succeeded", "failed", "cancelled"})
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_INT32 = 2**31 - 1


class EventIn(BaseModel):
    run_id: str = Field(min_length=1, max_length=255)
    stage: str = Field(min_length=1, max_length=200)
    instance: int | None = Field(None, ge=0, le=_INT32)
    attempt: int = Field(1, ge=1, le=_INT32)
    status: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")] = Field(
        description="started, succeeded, failed, cancelled, progress or metrics."
    )
    at: UtcDatetime
    worker: str | None = Field(None, max_length=255)
    detail: dict[str, Any] | None = None


class EventBatch(BaseModel):
    events: list[EventIn] = Field(max_length=1000)


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int


@dataclass
class _Stored:
    event: EventIn
    duration_s: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number >= 0 and number != float("inf") else None


def _store(session: Session, batch: EventBatch) -> list[_Stored]:
    stored = []
    for event in batch.events:
        same = (
            StageEvent.run_id == event.run_id,
            StageEvent.stage == event.stage,
            StageEvent.attempt == event.attempt,
            StageEvent.instance.is_(None)
            if event.instance is None
            else StageEvent.instance == event.instance,
        )
        if event.status in LIFECYCLE:
            seen = session.scalar(
                select(StageEvent.id).where(*same, StageEvent.status == event.status).limit(1)
            )
            if seen is not None:
                continue
        duration = None
        if event.status in FINISHED:
            duration = _number((event.detail or {}).get("duration_s"))
            if duration is None:
                started = session.scalar(
                    select(StageEvent.at).where(*same, StageEvent.status == "started").limit(1)
                )
                if started is not None:
                    duration = max(0.0, (event.at - started).total_seconds())
        session.add(
            StageEvent(
                run_id=event.run_id,
                stage=event.stage,
                instance=event.instance,
                attempt=event.attempt,
                status=event.status,
                at=event.at,
                worker=event.worker,
                detail=event.detail,
            )
        )
        session.flush()
        catalog_refs(session, refs_in(event.detail), run_id=event.run_id, stage=event.stage)
        stored.append(_Stored(event, duration))
    return stored


def _observe(telemetry: Telemetry, stored: list[_Stored]) -> None:
    for item in stored:
        event, detail = item.event, item.event.detail or {}
        telemetry.stage_events.labels(event.status).inc()
        if event.status == "started" and event.attempt > 1:
            telemetry.retries.inc()
        if event.status not in FINISHED:
            continue
        if item.duration_s is not None:
            telemetry.stage_duration.labels(event.status).observe(item.duration_s)
        moved = _number(detail.get("bytes"))
        if event.status == "succeeded" and moved is not None:
            telemetry.transfer_bytes.inc(moved)
            rate = _number(detail.get("rate"))
            seconds = _number(detail.get("seconds"))
            if rate is None and seconds:
                rate = moved / seconds
            if rate is not None:
                telemetry.transfer_rate.observe(rate)


@router.post("/events", response_model=EventsAccepted)
async def post_events(batch: EventBatch, control: Control) -> EventsAccepted:
    """Stage events from a worker (at most 1,000 per batch)."""
    stored = await control.db.run(lambda s: _store(s, batch))
    _observe(control.telemetry, stored)
    return EventsAccepted(accepted=len(batch.events), duplicates=len(batch.events) - len(stored))
