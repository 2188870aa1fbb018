"""An engine session for a command, with the in-process workers embedded mode needs.

In embedded mode nobody else may be polling, so a command that starts or retries a run serves
that run's task queues itself, and any command that queries a run serves the workflow queue
(a query on a closed run is answered by replaying it on a worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from temporalio.client import WorkflowFailureError, WorkflowHandle

from stageflow.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, console, err_console
from stageflow.cli.dataplane import embedded_data_server, worker_data_plane
from stageflow.cli.progress import stage_table, watch_run
from stageflow.engine.client import EngineSession, engine_session
from stageflow.engine.runs import run_state, summarize
from stageflow.settings import EngineSettings, WorkerSettings
from stageflow.worker.runner import StageWorker

__all__ = ["command_session", "follow_run"]


@contextlib.asynccontextmanager
async def command_session(
    *, owner: str = "cli", task_queues: Sequence[str] = (), settings: EngineSettings | None = None
) -> AsyncIterator[EngineSession]:
    async with engine_session(settings, owner=owner) as session:
        if not session.is_embedded:
            yield session
            return
        # This worker lives only as long as the command: on Ctrl-C it hands its stages back at
        # once (they stay durable in Temporal and resume with the next worker).
        quick = WorkerSettings(shutdown_grace=0)
        settings = settings or EngineSettings()
        if not task_queues:  # only queries to answer: no stages, no data
            async with StageWorker(session.client, task_queues=(), settings=quick):
                yield session
            return
        async with (
            embedded_data_server(settings) as server_url,
            worker_data_plane(settings) as data_plane,
            StageWorker(
                session.client,
                task_queues=task_queues,
                settings=quick,
                data_plane=data_plane,
                server_url=server_url,
            ),
        ):
            yield session


async def follow_run(
    session: EngineSession, run_id: str, handle: WorkflowHandle[Any, Any], as_json: bool
) -> int:
    """Show the run until it ends; print its outcome; return the exit status."""
    client = session.client
    result = asyncio.ensure_future(handle.result())
    try:
        if not as_json:
            await watch_run(client, run_id, result, console)
        with contextlib.suppress(WorkflowFailureError):
            await result
    except asyncio.CancelledError:
        result.cancel()
        hint = "`stageflow up`" if session.is_embedded else "its workers"
        err_console.print(
            f"\ninterrupted: run {run_id} is kept where it is and continues with {hint}; "
            f"stop it with `stageflow runs cancel {run_id}`"
        )
        return EXIT_INTERRUPTED
    state = await run_state(client, run_id)
    if as_json:
        print(json.dumps(summarize(state), default=str))
    else:
        if not console.is_terminal:
            console.print(stage_table(state, {}))
        for name, st in state.stages.items():
            if st.error:
                err_console.print(f"[red]{name} failed:[/red] {st.error}", highlight=False)
        console.print(f"run {run_id} [bold]{state.status}[/bold]", highlight=False)
    return 0 if state.status == "succeeded" else EXIT_FAILED
