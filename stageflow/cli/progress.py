"""Watching a run: a live table in a terminal, one line per change elsewhere."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table
from temporalio.client import Client

from stageflow.engine import types as t
from stageflow.engine.runs import LiveActivity, live_activities, run_state
from stageflow.errors import EngineError

__all__ = ["STATUS_STYLE", "stage_table", "watch_run"]

STATUS_STYLE = {
    t.PENDING: "dim",
    t.WAITING_APPROVAL: "yellow",
    t.RUNNING: "cyan",
    t.SUCCEEDED: "green",
    t.FAILED: "red",
    t.UPSTREAM_FAILED: "red dim",
    t.SKIPPED: "dim",
    t.CANCELLED: "magenta",
}


def _elapsed(st: t.StageState) -> str:
    if not st.started_at:
        return ""
    start = datetime.fromisoformat(st.started_at)
    end = datetime.fromisoformat(st.finished_at) if st.finished_at else None
    seconds = ((end or datetime.now(start.tzinfo)) - start).total_seconds()
    return f"{seconds:.1f}s"


def _bar(done: float, total: float, width: int = 12) -> str:
    filled = round(width * min(done / total, 1.0)) if total else 0
    return "█" * filled + "░" * (width - filled)


def _progress(name: str, st: t.StageState, live: dict[str, LiveActivity]) -> str:
    if st.instances:
        return f"{_bar(st.instances_done, st.instances)} {st.instances_done}/{st.instances}"
    activity = live.get(name)
    if activity and activity.progress:
        p = activity.progress
        done, total, unit = p.get("done") or 0, p.get("total"), p.get("unit", "")
        if total:
            return f"{_bar(done, total)} {done:g}/{total:g} {unit}"
        return f"{done:g} {unit}"
    return ""


def _attempts(name: str, st: t.StageState, live: dict[str, LiveActivity]) -> str:
    running = [a for key, a in live.items() if key == name or key.startswith(f"{name}[")]
    attempt = max([st.attempts, *(a.attempt for a in running)])
    failure = next((a.last_failure for a in running if a.last_failure), None)
    text = str(attempt or "")
    return f"{text} (last: {failure[:60]})" if failure else text


def stage_table(state: t.RunState, live: dict[str, LiveActivity]) -> Table:
    paused = " [yellow](paused)[/yellow]" if state.paused else ""
    table = Table(title=f"{state.run_id}: {state.status}{paused}", title_justify="left")
    for column in ("stage", "status", "attempts", "progress", "queue", "time"):
        table.add_column(column)
    for name, st in state.stages.items():
        status = st.status + (" (kept)" if st.reused else "")
        style = STATUS_STYLE.get(st.status, "")
        table.add_row(
            name,
            f"[{style}]{status}[/{style}]" if style else status,
            _attempts(name, st, live),
            _progress(name, st, live),
            st.task_queue,
            _elapsed(st),
        )
    return table


async def watch_run(
    client: Client, run_id: str, done: asyncio.Future[object], console: Console
) -> None:
    """Show the run until ``done`` resolves: live table on a terminal, change lines otherwise."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live_view:
            while True:
                finished = done.done()
                try:
                    state = await run_state(client, run_id)
                    live = {} if finished else await live_activities(client, run_id)
                    live_view.update(stage_table(state, live))
                except EngineError:
                    pass
                if finished:
                    return
                await asyncio.wait({done}, timeout=0.5)
    seen: dict[str, str] = {}
    while not done.done():
        try:
            stages = (await run_state(client, run_id)).stages
        except EngineError:
            stages = {}
        for name, st in stages.items():
            if seen.get(name) != st.status:
                seen[name] = st.status
                console.print(f"{time.strftime('%H:%M:%S')} {name}: {st.status}", highlight=False)
        await asyncio.wait({done}, timeout=0.5)
