"""Logs: workers post batches; clients page them, follow them (NDJSON) or stream them (WebSocket).

Ingestion is idempotent on (worker, stream_id, seq): a worker that re-sends a batch after a
timeout stores nothing twice. Reading pages by the server-assigned line ``id`` (the ``after``
cursor), which orders a run's lines across all its workers; ``seq`` stays per worker stream.
Following replays from the cursor and then tails the DB (see ``server.logbus``), so it survives
server restarts: a client reconnects with ``after`` = the last id it saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from starlette.websockets import WebSocketState

from stageflow.errors import RunNotFoundError
from stageflow.server.api.deps import ERRORS, Control, UtcDatetime, get_control, websocket_access
from stageflow.server.api.runs import RunId
from stageflow.server.control import ControlPlane
from stageflow.server.index import TERMINAL_RUN_STATUSES
from stageflow.server.logbus import LogQuery, follow_lines, page_lines
from stageflow.server.models import LogLine

__all__ = ["router", "stream_router"]

router = APIRouter(tags=["logs"], responses=ERRORS)
stream_router = APIRouter(tags=["logs"])

MAX_LINES = 1000
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


class LogLineIn(BaseModel):
    seq: int = Field(ge=0, le=_INT64, description="Position in this worker stream.")
    run_id: str = Field(min_length=1, max_length=255)
    stage: str | None = Field(None, max_length=200)
    instance: int | None = Field(None, ge=0, le=_INT32)
    attempt: int | None = Field(None, ge=0, le=_INT32)
    at: UtcDatetime
    level: str = Field("info", min_length=1, max_length=16)
    stream: Literal["log", "stdout", "stderr"] = "log"
    message: str


class LogBatch(BaseModel):
    worker: str = Field(min_length=1, max_length=255)
    stream_id: str = Field(
        min_length=1, max_length=64, description="Unique per worker process (a uuid)."
    )
    lines: list[LogLineIn] = Field(max_length=MAX_LINES)


class LogAccepted(BaseModel):
    accepted: int = Field(description="Lines of the batch the server now holds.")
    duplicates: int = Field(description="Of those, lines it already held (re-sent).")


class LogLineOut(BaseModel):
    id: int = Field(description="Server-assigned; pass the last one as ?after= to go on.")
    run_id: str
    stage: str | None
    instance: int | None
    attempt: int | None
    seq: int
    worker: str
    at: UtcDatetime
    level: str
    stream: str
    message: str


class LogPage(BaseModel):
    run_id: str
    lines: list[LogLineOut]
    next: int = Field(description="The cursor for the next page (?after=).")


def _out(line: LogLine) -> LogLineOut:
    return LogLineOut(
        id=line.id,
        run_id=line.run_id,
        stage=line.stage,
        instance=line.instance,
        attempt=line.attempt,
        seq=line.seq,
        worker=line.worker,
        at=line.at,
        level=line.level,
        stream=line.stream,
        message=line.message,
    )


def _store(session: Session, batch: LogBatch) -> int:
    """Insert the batch, skipping lines already held; returns how many were new."""
    if not batch.lines:
        return 0
    rows: list[dict[str, Any]] = [
        {
            "run_id": line.run_id,
            "stage": line.stage,
            "instance": line.instance,
            "attempt": line.attempt,
            "seq": line.seq,
            "worker": batch.worker,
            "stream_id": batch.stream_id,
            "at": line.at,
            "level": line.level,
            "stream": line.stream,
            "message": line.message,
        }
        for line in {line.seq: line for line in batch.lines}.values()
    ]
    dialect = session.get_bind().dialect.name
    keys = ["worker", "stream_id", "seq"]
    if dialect == "postgresql":
        statement: Any = postgresql.insert(LogLine).on_conflict_do_nothing(index_elements=keys)
    elif dialect == "sqlite":
        statement = sqlite.insert(LogLine).on_conflict_do_nothing(index_elements=keys)
    else:  # pragma: no cover - db.py only opens sqlite and postgresql
        statement = insert(LogLine)
    inserted = session.execute(statement.values(rows).returning(LogLine.id)).all()
    return len(inserted)


@router.post("/logs", response_model=LogAccepted)
async def post_logs(batch: LogBatch, control: Control) -> LogAccepted:
    """A worker's batch of log lines (at most 1,000 lines and 1 MiB)."""
    new = await control.db.run(lambda s: _store(s, batch))
    if new:
        control.telemetry.log_lines.inc(new)
        control.logs.notify()
    held = len({line.seq for line in batch.lines})
    return LogAccepted(accepted=held, duplicates=held - new)


def _run_ended(control: ControlPlane, run_id: str) -> Any:
    async def ended() -> bool:
        try:
            status = (await control.index.state(run_id)).status
        except RunNotFoundError:
            return True  # neither Temporal nor the index knows it: nothing more will come
        except Exception:  # Temporal unreachable or no worker to answer: keep following
            return False
        return status in TERMINAL_RUN_STATUSES

    return ended


async def _ndjson(control: ControlPlane, query: LogQuery) -> AsyncIterator[bytes]:
    async for batch in follow_lines(
        control.db,
        control.logs,
        query,
        run_ended=_run_ended(control, query.run_id),
        poll_interval=control.settings.log_poll_interval,
        grace=control.settings.follow_grace,
    ):
        yield b"".join(_out(line).model_dump_json().encode() + b"\n" for line in batch)


@router.get(
    "/runs/{run_id}/logs",
    response_model=LogPage,
    responses={
        200: {
            "description": "A page of lines; with follow=true, NDJSON lines until the run ends.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def get_logs(
    run_id: RunId,
    control: Control,
    stage: Annotated[str | None, Query(max_length=200)] = None,
    after: Annotated[int, Query(ge=0, le=_INT64, description="Lines with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LINES)] = 500,
    follow: Annotated[bool, Query(description="Stream new lines as they come (NDJSON).")] = False,
) -> Any:
    """A run's log lines in order, paged by ``after``; or, with ``follow``, a live stream."""
    query = LogQuery(run_id, stage, after, limit)
    if follow:
        return StreamingResponse(_ndjson(control, query), media_type="application/x-ndjson")
    lines = await control.db.run(lambda s: page_lines(s, query))
    return LogPage(
        run_id=run_id, lines=[_out(line) for line in lines], next=lines[-1].id if lines else after
    )


@stream_router.websocket("/runs/{run_id}/logs/stream")
async def stream_logs(
    websocket: WebSocket, run_id: str, stage: str | None = None, after: int = 0
) -> None:
    """Replays the run's lines after ``after``, then sends new ones as JSON text messages.

    Auth: ``Authorization: Bearer`` or ``?token=``; without a good one the socket is closed
    with code 4401 (missing) or 4403 (wrong) and the reason. Ends with close code 1000 once
    the run has ended (or is unknown) and no line came for ``follow_grace`` seconds.
    """
    control = get_control(websocket)
    problem = websocket_access(websocket, control)
    if problem is not None:
        status, message = problem
        # Accept, then close with 4401/4403 (HTTP status + 4000): browsers show a close code
        # and reason to the page, never the status of a refused upgrade.
        await websocket.accept()
        await websocket.close(code=4000 + status, reason=message[:120])
        return
    await websocket.accept()
    query = LogQuery(run_id[:255], stage, max(after, 0), 500)

    async def pump() -> None:
        async for batch in follow_lines(
            control.db,
            control.logs,
            query,
            run_ended=_run_ended(control, run_id),
            poll_interval=control.settings.log_poll_interval,
            grace=control.settings.follow_grace,
        ):
            for line in batch:
                await websocket.send_text(json.dumps(_out(line).model_dump(mode="json")))

    async def until_client_leaves() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = {asyncio.create_task(pump()), asyncio.create_task(until_client_leaves())}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect):
            raise error
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.close(code=1000, reason="run ended")
