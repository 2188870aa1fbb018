"""The run index: the control DB's copy of what Temporal knows about runs.

Temporal is the source of truth; the index exists so that runs can be listed, filtered and
paged cheaply, and still be shown after Temporal's retention has dropped them. It is fed from
three places: runs the server starts (``record_start``), the state it reads when a run is
shown (``record_state``), and a throttled sweep of Temporal's recent runs (``sync``), which
also picks up runs started elsewhere (the CLI, schedules). Temporal's visibility store does
not know about pause (a workflow-level flag), so a run the index holds as ``paused`` stays so
until the server sees it otherwise.

A run's full state is a workflow query, which a worker serving the workflow queue answers
(for closed runs too, by replay). So the index keeps the last state it read: a run that has
closed since is shown from that snapshot without a query, and only a closed run never seen
open needs a worker to be read.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from stageflow.engine.runs import RunInfo, list_runs, run_handle, run_state
from stageflow.engine.types import RunState, StageState
from stageflow.errors import EngineError, RunNotFoundError
from stageflow.server.db import Database
from stageflow.server.models import RunRecord, utcnow

__all__ = ["TERMINAL_RUN_STATUSES", "RunIndex"]

TERMINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled", "terminated", "timed_out"})
_SWEEP_LIMIT = 500
_STALE_REFRESH_LIMIT = 20
_QUERY_TIMEOUT_S = 10.0


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _snapshot(state: RunState) -> dict[str, Any]:
    return asdict(state)


def _from_snapshot(data: dict[str, Any]) -> RunState:
    stages = {name: StageState(**stage) for name, stage in data.get("stages", {}).items()}
    return RunState(**{**data, "stages": stages})


class RunIndex:
    def __init__(self, db: Database, client: Client, *, sync_interval: float) -> None:
        self.db = db
        self.client = client
        self.sync_interval = sync_interval
        self._last_sync: float | None = None
        self._lock = asyncio.Lock()

    async def record_start(self, run_id: str, pipeline: str, params: dict[str, Any]) -> None:
        def write(session: Session) -> None:
            now = utcnow()
            row = session.scalar(select(RunRecord).where(RunRecord.run_id == run_id))
            if row is None:
                session.add(
                    RunRecord(
                        run_id=run_id,
                        pipeline=pipeline,
                        status="running",
                        params=params,
                        started_at=now,
                        finished_at=None,
                        updated_at=now,
                    )
                )
            else:  # a retry under the same id: running again, first start kept
                row.status, row.finished_at, row.updated_at = "running", None, now

        await self.db.run(write)

    async def record_status(self, run_id: str, status: str) -> None:
        def write(session: Session) -> None:
            row = session.scalar(select(RunRecord).where(RunRecord.run_id == run_id))
            if row is not None and row.status not in TERMINAL_RUN_STATUSES:
                row.status, row.updated_at = status, utcnow()

        await self.db.run(write)

    async def record_state(self, state: RunState) -> None:
        """Store what a state query said (the most precise status there is)."""

        def write(session: Session) -> None:
            now = utcnow()
            row = session.scalar(select(RunRecord).where(RunRecord.run_id == state.run_id))
            if row is None:
                row = RunRecord(
                    run_id=state.run_id,
                    pipeline=state.pipeline,
                    status=state.status,
                    params=dict(state.params),
                    started_at=_parse_time(state.started_at) or now,
                    finished_at=None,
                    updated_at=now,
                )
                session.add(row)
            row.status = state.status
            row.params = dict(state.params)
            row.finished_at = _parse_time(state.finished_at)
            row.updated_at = now
            row.state = _snapshot(state)

        await self.db.run(write)

    async def snapshot(self, run_id: str) -> RunState | None:
        """The last state the index holds for the run, if any."""
        data = await self.db.run(
            lambda s: s.scalar(select(RunRecord.state).where(RunRecord.run_id == run_id))
        )
        return _from_snapshot(data) if data else None

    async def state(self, run_id: str) -> RunState:
        """The run's state: live from Temporal, or the snapshot once the run has closed.

        Raises ``RunNotFoundError`` when neither Temporal nor the index knows the run.
        """
        return (await self.read(run_id))[0]

    async def read(self, run_id: str) -> tuple[RunState, bool]:
        """``(state, in_temporal)``: False when only the index still knows the run."""
        snapshot = await self.snapshot(run_id)
        try:
            description = await run_handle(self.client, run_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                if snapshot is not None:
                    return snapshot, False  # Temporal's retention dropped it; we remember
                raise RunNotFoundError(run_id) from None
            raise
        closed = description.status not in (None, WorkflowExecutionStatus.RUNNING)
        if (
            closed
            and snapshot is not None
            and snapshot.status in TERMINAL_RUN_STATUSES
            and snapshot.finished_at
            and description.start_time is not None
            and datetime.fromisoformat(snapshot.finished_at) >= description.start_time
        ):
            return snapshot, True  # read after this execution closed: it cannot change now
        try:
            state = await asyncio.wait_for(run_state(self.client, run_id), _QUERY_TIMEOUT_S)
        except (TimeoutError, EngineError) as exc:
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise EngineError(
                f"cannot read the state of run {run_id!r} ({detail}): a worker serving the "
                "stageflow.workflows queue answers it; is one running?"
            ) from None
        await self.record_state(state)
        return state, True

    async def sync(self, *, force: bool = False) -> None:
        """Refresh the index from Temporal, at most once per ``sync_interval``."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            now = loop.time()
            if (
                not force
                and self._last_sync is not None
                and now - self._last_sync < self.sync_interval
            ):
                return
            infos = await list_runs(self.client, limit=_SWEEP_LIMIT)
            newest: dict[str, RunInfo] = {}
            for info in infos:  # newest execution first: a retried run appears twice
                newest.setdefault(info.run_id, info)
            stale = await self.db.run(lambda s: self._apply(s, newest))
            for run_id in stale[:_STALE_REFRESH_LIMIT]:
                try:
                    await self.state(run_id)
                except RunNotFoundError:
                    await self.record_status(run_id, "unknown")
            self._last_sync = loop.time()

    @staticmethod
    def _apply(session: Session, newest: dict[str, RunInfo]) -> list[str]:
        """Upsert the sweep; return open runs the sweep did not cover (to ask one by one)."""
        now = utcnow()
        rows = {
            row.run_id: row
            for row in session.scalars(select(RunRecord).where(RunRecord.run_id.in_(list(newest))))
        }
        for run_id, info in newest.items():
            row = rows.get(run_id)
            if row is None:
                session.add(
                    RunRecord(
                        run_id=run_id,
                        pipeline=info.pipeline,
                        status=info.status,
                        params={},
                        started_at=info.started_at or now,
                        finished_at=info.closed_at,
                        updated_at=now,
                    )
                )
                continue
            keep_paused = row.status == "paused" and info.status == "running"
            if not keep_paused and row.status != info.status:
                row.status = info.status
                row.updated_at = now
            row.finished_at = info.closed_at if info.status != "running" else None
            if info.started_at is not None and info.started_at < row.started_at:
                row.started_at = info.started_at
            row.pipeline = row.pipeline or info.pipeline
        open_rows = session.scalars(
            select(RunRecord.run_id)
            .where(RunRecord.status.in_(("running", "paused")))
            .where(RunRecord.run_id.not_in(list(newest)))
            .order_by(RunRecord.updated_at)
            .limit(_STALE_REFRESH_LIMIT)
        )
        return list(open_rows)
