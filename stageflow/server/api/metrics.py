"""Metrics: Prometheus's ``/metrics`` for the deployment, ``/runs/{id}/metrics`` for one run.

``/metrics`` (read token or admin) refreshes the DB-backed gauges and the queue backlog at
scrape time (see ``server.telemetry``). A run's metrics are its stage timings and attempts
(from Temporal), the bytes its transfers moved and the ``metrics`` events its stages posted.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from stageflow.engine.routing import WORKFLOW_TASK_QUEUE
from stageflow.server.api.deps import ERRORS, Control
from stageflow.server.api.events import LIFECYCLE
from stageflow.server.api.runs import RunId
from stageflow.server.api.workers import count_by_state, served_queues
from stageflow.server.errors import ErrorBody
from stageflow.server.models import RunRecord, StageEvent

__all__ = ["prometheus_router", "router"]

log = logging.getLogger("stageflow.server")

router = APIRouter(tags=["metrics"], responses=ERRORS)
prometheus_router = APIRouter(tags=["metrics"], responses=ERRORS)

_MAX_QUEUES = 50
_BACKLOG_TIMEOUT_S = 2.0


def _snapshot(
    session: Session, interval: float
) -> tuple[dict[str, int], dict[str, int], dict[str, int], list[str]]:
    runs = {
        status: count
        for status, count in session.execute(
            select(RunRecord.status, func.count()).group_by(RunRecord.status)
        )
    }
    latest = (
        select(func.max(StageEvent.id))
        .where(StageEvent.status.in_(LIFECYCLE))
        .group_by(StageEvent.run_id, StageEvent.stage, StageEvent.instance)
    )
    stages = {
        status: count
        for status, count in session.execute(
            select(StageEvent.status, func.count())
            .where(StageEvent.id.in_(latest))
            .group_by(StageEvent.status)
        )
    }
    return runs, stages, count_by_state(session, interval), served_queues(session, interval)


async def _backlog(client: Client, queues: list[str]) -> dict[tuple[str, str], int]:
    """Temporal's approximate backlog of each queue (activity tasks; workflow tasks for ours)."""
    wanted = [(queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY) for queue in queues[:_MAX_QUEUES]]
    wanted.append((WORKFLOW_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))

    async def one(queue: str, kind: Any) -> tuple[tuple[str, str], int] | None:
        request = DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=kind,
            report_stats=True,
        )
        try:
            answer = await client.workflow_service.describe_task_queue(
                request, timeout=timedelta(seconds=_BACKLOG_TIMEOUT_S)
            )
        except Exception as exc:  # a scrape must not fail for one queue
            log.debug("describe_task_queue %s failed: %s", queue, exc)
            return None
        label = "workflow" if kind == TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW else "activity"
        return (queue, label), int(answer.stats.approximate_backlog_count)

    found = await asyncio.gather(*(one(queue, kind) for queue, kind in wanted))
    return dict(item for item in found if item is not None)


@prometheus_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def prometheus(control: Control) -> Response:
    """Prometheus metrics: runs, stages, workers, queue backlog, durations, transfers."""
    await control.index.sync()
    interval = control.settings.heartbeat_interval
    runs, stages, workers, queues = await control.db.run(lambda s: _snapshot(s, interval))
    backlog = await _backlog(control.client, queues)
    control.telemetry.set_snapshot(runs=runs, stages=stages, workers=workers, backlog=backlog)
    body = await anyio.to_thread.run_sync(control.telemetry.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


class StageMetrics(BaseModel):
    stage: str
    status: str
    attempts: int
    duration_s: float | None
    transfer_bytes: int = Field(0, description="Bytes moved by this stage's finished transfers.")


class MetricPoint(BaseModel):
    stage: str
    instance: int | None
    attempt: int
    at: datetime
    values: dict[str, Any]


class RunMetrics(BaseModel):
    run_id: str
    status: str
    duration_s: float | None
    attempts: int = Field(description="Stage attempts in all.")
    transfer_bytes: int
    stages: list[StageMetrics]
    metrics: list[MetricPoint] = Field(description="What stages posted as `metrics` events.")


def _run_events(session: Session, run_id: str) -> tuple[dict[str, int], list[MetricPoint]]:
    moved: dict[str, int] = {}
    points = []
    rows = session.scalars(
        select(StageEvent)
        .where(StageEvent.run_id == run_id, StageEvent.status.in_(("succeeded", "metrics")))
        .order_by(StageEvent.id)
    )
    for row in rows:
        detail = row.detail or {}
        if row.status == "metrics":
            points.append(
                MetricPoint(
                    stage=row.stage,
                    instance=row.instance,
                    attempt=row.attempt,
                    at=row.at,
                    values=detail,
                )
            )
            continue
        size = detail.get("bytes")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            moved[row.stage] = moved.get(row.stage, 0) + size
    return moved, points


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@router.get(
    "/runs/{run_id}/metrics",
    response_model=RunMetrics,
    responses={404: {"model": ErrorBody, "description": "No such run."}},
)
async def run_metrics(run_id: RunId, control: Control) -> RunMetrics:
    state = await control.index.state(run_id)
    moved, points = await control.db.run(lambda s: _run_events(s, run_id))
    stages = [
        StageMetrics(
            stage=name,
            status=st.status,
            attempts=st.attempts,
            duration_s=_seconds(st.started_at, st.finished_at),
            transfer_bytes=moved.get(name, 0),
        )
        for name, st in state.stages.items()
    ]
    return RunMetrics(
        run_id=run_id,
        status=state.status,
        duration_s=_seconds(state.started_at, state.finished_at),
        attempts=sum(stage.attempts for stage in stages),
        transfer_bytes=sum(moved.values()),
        stages=stages,
        metrics=points,
    )
