"""``stageflow runs list|show|cancel|pause|resume|approve|retry``."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.table import Table

from stageflow.cli.common import console, run_async
from stageflow.cli.progress import stage_table
from stageflow.cli.session import command_session, follow_run
from stageflow.engine import runs as engine_runs
from stageflow.worker.runner import StageWorker

app = typer.Typer(no_args_is_help=True)

RUN_ID = typer.Argument(..., help="Run id (as printed by `stageflow run`).")


@app.command("list")
def list_(
    limit: int = typer.Option(20, help="Most recent runs to show."),
    pipeline: str | None = typer.Option(None, help="Only runs of this pipeline."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent runs, newest first."""

    async def main() -> None:
        async with command_session() as session:
            found = await engine_runs.list_runs(session.client, limit=limit, pipeline=pipeline)
        if as_json:
            print(json.dumps([asdict(info) for info in found], default=str))
            return
        table = Table("pipeline", "status", "started", "closed")
        table.add_column("run id", no_wrap=True)
        for info in found:
            started = f"{info.started_at:%Y-%m-%d %H:%M:%S}" if info.started_at else ""
            closed = f"{info.closed_at:%Y-%m-%d %H:%M:%S}" if info.closed_at else ""
            table.add_row(info.pipeline, info.status, started, closed, info.run_id)
        console.print(table)

    run_async(main)


@app.command()
def show(run_id: str = RUN_ID, as_json: bool = typer.Option(False, "--json")) -> None:
    """A run's stages: status, attempts, progress, errors and (with --json) outputs."""

    async def main() -> None:
        async with command_session() as session:
            state = await engine_runs.run_state(session.client, run_id)
            live = await engine_runs.live_activities(session.client, run_id)
        if as_json:
            print(json.dumps(asdict(state), default=str))
            return
        console.print(stage_table(state, live))
        for name, st in state.stages.items():
            if st.error:
                console.print(f"[red]{name}:[/red] {st.error}", highlight=False)

    run_async(main)


def _control(action: str, run_id: str, *args: object) -> None:
    operation = getattr(engine_runs, f"{action}_run")

    async def main() -> None:
        async with command_session() as session:
            await operation(session.client, run_id, *args)
        console.print(f"{action}: sent to {run_id}")

    run_async(main)


@app.command()
def cancel(run_id: str = RUN_ID) -> None:
    """Cancel a run: running stages are cancelled, nothing new starts."""
    _control("cancel", run_id)


@app.command()
def pause(run_id: str = RUN_ID) -> None:
    """Start no new stage until resumed (running stages finish)."""
    _control("pause", run_id)


@app.command()
def resume(run_id: str = RUN_ID) -> None:
    """Resume a paused run."""
    _control("resume", run_id)


@app.command()
def approve(
    run_id: str = RUN_ID,
    stage: str | None = typer.Option(None, help="Stage to approve (default: all waiting)."),
) -> None:
    """Open the approval gate of a stage."""
    _control("approve", run_id, stage)


@app.command()
def retry(
    run_id: str = RUN_ID,
    detach: bool = typer.Option(False, "--detach", "-d", help="Do not wait for the run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document at the end."),
) -> None:
    """Run a failed or cancelled run again from its failed stages, keeping finished ones."""

    async def main() -> int:
        async with command_session() as session:
            previous = await engine_runs.run_state(session.client, run_id)
            serve_here = session.is_embedded and not detach
            queues = [st.task_queue for st in previous.stages.values()] if serve_here else []
            async with StageWorker(session.client, task_queues=queues, workflows=False):
                handle = await engine_runs.retry_run(session.client, run_id)
                kept = [name for name, st in previous.stages.items() if st.status == "succeeded"]
                if not as_json:
                    console.print(f"retrying {run_id}; kept: {', '.join(kept) or 'nothing'}")
                if detach:
                    return 0
                return await follow_run(session, run_id, handle, as_json)

    raise typer.Exit(run_async(main))
