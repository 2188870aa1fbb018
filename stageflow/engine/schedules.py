"""Pipelines on a cron, as Temporal Schedules (``stageflow-<pipeline>``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from stageflow.engine.routing import WORKFLOW_TASK_QUEUE
from stageflow.engine.runs import compile_run
from stageflow.engine.workflow import PipelineWorkflow
from stageflow.errors import EngineError
from stageflow.spec.model import Pipeline

__all__ = [
    "ScheduleInfo",
    "apply_schedule",
    "delete_schedule",
    "list_schedules",
    "schedule_id",
    "trigger_schedule",
]

PREFIX = "stageflow-"
NOTE_PREFIX = "cron: "


def schedule_id(name: str) -> str:
    return name if name.startswith(PREFIX) else f"{PREFIX}{name}"


def _schedule(pipeline: Pipeline, heartbeat_timeout: float) -> Schedule:
    assert pipeline.schedule
    run_input = compile_run(pipeline, run_id="", heartbeat_timeout=heartbeat_timeout)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PipelineWorkflow.run,
            run_input,
            id=f"{pipeline.name}-scheduled",
            task_queue=WORKFLOW_TASK_QUEUE,
            memo={"pipeline": pipeline.name},
        ),
        spec=ScheduleSpec(cron_expressions=[pipeline.schedule]),
        # The server turns cron into calendars; keep the user's spelling to show it back.
        state=ScheduleState(note=f"{NOTE_PREFIX}{pipeline.schedule}"),
    )


async def apply_schedule(
    client: Client, pipeline: Pipeline, *, heartbeat_timeout: float
) -> tuple[str, bool]:
    """Create the pipeline's schedule, or replace its spec and action; True when created."""
    sid = schedule_id(pipeline.name)
    schedule = _schedule(pipeline, heartbeat_timeout)
    try:
        await client.create_schedule(sid, schedule)
        return sid, True
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(sid).update(replace)
        return sid, False


@dataclass
class ScheduleInfo:
    schedule_id: str
    cron: str
    paused: bool
    next_runs: list[datetime]


async def list_schedules(client: Client) -> list[ScheduleInfo]:
    found = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith(PREFIX):
            continue
        try:
            description = await client.get_schedule_handle(entry.id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue  # deleted since the (eventually consistent) listing was taken
            raise
        state = description.schedule.state
        found.append(
            ScheduleInfo(
                entry.id,
                (state.note or "").removeprefix(NOTE_PREFIX),
                state.paused,
                list(description.info.next_action_times),
            )
        )
    return found


async def _with_schedule(client: Client, name: str, action: str) -> str:
    sid = schedule_id(name)
    handle = client.get_schedule_handle(sid)
    try:
        await getattr(handle, action)()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise EngineError(f"no schedule {sid!r}: see `stageflow schedule list`") from None
        raise EngineError(f"schedule {sid!r}: {exc.message}") from None
    return sid


async def delete_schedule(client: Client, name: str) -> str:
    return await _with_schedule(client, name, "delete")


async def trigger_schedule(client: Client, name: str) -> str:
    return await _with_schedule(client, name, "trigger")
