"""Following a run's logs: replay what the DB holds, then tail it.

The DB is the only source: a follower reads lines with ``id`` above the last one it sent, so
it works the same after a server restart and when another server process stored the lines.
Lines posted to *this* process wake its followers at once (``LogSignal``); otherwise they
poll every ``log_poll_interval``. A follower stops when its run has ended and no line came
for ``follow_grace`` seconds (late batches from workers), or when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from stageflow.server.db import Database
from stageflow.server.models import LogLine

__all__ = ["LogQuery", "LogSignal", "follow_lines", "page_lines"]


class LogSignal:
    """Wakes every waiting follower when lines are stored (one asyncio loop: the server's)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


@dataclass(frozen=True)
class LogQuery:
    run_id: str
    stage: str | None = None
    after: int = 0
    limit: int = 500


def page_lines(session: Session, query: LogQuery) -> list[LogLine]:
    """Up to ``limit`` lines of the run with ``id > after``, oldest first."""
    statement = select(LogLine).where(LogLine.run_id == query.run_id, LogLine.id > query.after)
    if query.stage is not None:
        statement = statement.where(LogLine.stage == query.stage)
    return list(session.scalars(statement.order_by(LogLine.id).limit(query.limit)))


async def follow_lines(
    db: Database,
    signal: LogSignal,
    query: LogQuery,
    *,
    run_ended: Callable[[], Awaitable[bool]],
    poll_interval: float,
    grace: float,
    status_every: float = 2.0,
) -> AsyncIterator[list[LogLine]]:
    """Batches of new lines, forever or until the run ended and ``grace`` passed quietly."""
    after = query.after
    loop = asyncio.get_running_loop()
    next_status = loop.time()
    quiet_since: float | None = None
    while True:
        page = LogQuery(query.run_id, query.stage, after, query.limit)
        batch = await db.run(lambda s, page=page: page_lines(s, page))  # type: ignore[misc]
        if batch:
            after = batch[-1].id
            quiet_since = None
            yield batch
            if len(batch) == query.limit:
                continue  # more is waiting: no need to sleep
        now = loop.time()
        if now >= next_status:
            next_status = now + status_every
            if quiet_since is None and await run_ended():
                quiet_since = now
        if quiet_since is not None and now - quiet_since >= grace:
            return
        await signal.wait(poll_interval)
