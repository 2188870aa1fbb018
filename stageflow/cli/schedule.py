"""``stageflow schedule apply|list|delete|trigger``: pipelines on a cron, as Temporal Schedules."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from stageflow.cli.common import EXIT_INVALID, console, err_console, load_spec, run_async
from stageflow.cli.session import command_session
from stageflow.engine import schedules
from stageflow.settings import EngineSettings

app = typer.Typer(no_args_is_help=True)


@app.command()
def apply(
    file: Path = typer.Argument(..., help="Pipeline spec with a `schedule:` cron."),
    param: list[str] = typer.Option([], "--param", "-p", help="Override a param."),
) -> None:
    """Create or update the schedule of a pipeline from its spec's `schedule:`."""
    pipeline = load_spec(file, param)
    if not pipeline.schedule:
        err_console.print(f"[red]error:[/red] {file}: the spec has no `schedule:` (cron) field")
        raise typer.Exit(EXIT_INVALID)
    settings = EngineSettings()

    async def main() -> None:
        async with command_session() as session:
            schedule_id, created = await schedules.apply_schedule(
                session.client, pipeline, heartbeat_timeout=settings.heartbeat_timeout
            )
        verb = "created" if created else "updated"
        console.print(f"{verb} schedule {schedule_id}: {pipeline.schedule} (UTC)")

    run_async(main)


@app.command("list")
def list_() -> None:
    """Schedules of pipelines, with their next run times."""

    async def main() -> None:
        async with command_session() as session:
            found = await schedules.list_schedules(session.client)
        table = Table("schedule", "cron", "paused", "next runs")
        for entry in found:
            upcoming = ", ".join(f"{when:%Y-%m-%d %H:%M}" for when in entry.next_runs[:2])
            table.add_row(entry.schedule_id, entry.cron, str(entry.paused), upcoming)
        console.print(table)

    run_async(main)


@app.command()
def delete(name: str = typer.Argument(..., help="Pipeline name or schedule id.")) -> None:
    """Delete a pipeline's schedule (runs it already started go on)."""

    async def main() -> None:
        async with command_session() as session:
            schedule_id = await schedules.delete_schedule(session.client, name)
        console.print(f"deleted schedule {schedule_id}")

    run_async(main)


@app.command()
def trigger(name: str = typer.Argument(..., help="Pipeline name or schedule id.")) -> None:
    """Start a scheduled pipeline now, outside its cron."""

    async def main() -> None:
        async with command_session() as session:
            schedule_id = await schedules.trigger_schedule(session.client, name)
        console.print(f"triggered schedule {schedule_id}")

    run_async(main)
