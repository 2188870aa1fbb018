"""``stageflow worker`` (serve task queues) and ``stageflow up`` (everything on one machine)."""

from __future__ import annotations

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer

from stageflow.cli.common import console, run_async, show_stage_logs
from stageflow.cli.dataplane import embedded_data_server, worker_data_plane
from stageflow.engine.client import engine_session
from stageflow.engine.devserver import is_listening
from stageflow.settings import DataSettings, EngineSettings, WorkerSettings
from stageflow.worker.runner import StageWorker, default_identity, task_queues_for

UP_QUEUES = ["default", "ml", "api"]


def _split_tags(tags: str) -> list[str]:
    return [tag.strip() for tag in tags.split(",") if tag.strip()]


async def _serve(worker: StageWorker, settings: WorkerSettings) -> None:
    """Run until SIGINT/SIGTERM, then drain: running stages get the grace period to finish."""
    show_stage_logs()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(settings.concurrency, thread_name_prefix="stage"))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()
        console.print(f"stopping: running stages have {settings.shutdown_grace:g}s to finish")


def worker(
    queue: list[str] = typer.Option(
        ["default"], "--queue", "-q", help="Queue to serve (repeatable)."
    ),
    tags: str = typer.Option("", "--tags", "-t", help="Comma-separated tags this worker carries."),
    path: list[Path] = typer.Option([], "--path", help="Add to sys.path for stage functions."),
    workflows: bool = typer.Option(True, help="Also run pipeline workflow tasks."),
    identity: str | None = typer.Option(None, help="Name shown for this worker."),
    concurrency: int | None = typer.Option(None, help="Stages at once per task queue."),
) -> None:
    """Serve stages on task queues; routing by tags is explained in `engine/routing.py`."""
    for entry in path:
        sys.path.insert(0, str(entry.resolve()))
    settings = WorkerSettings()
    if concurrency:
        settings = settings.model_copy(update={"concurrency": concurrency})
    task_queues = task_queues_for(queue, _split_tags(tags))

    engine_settings = EngineSettings()

    async def main() -> None:
        async with (
            engine_session(engine_settings, owner="worker") as session,
            worker_data_plane(engine_settings) as data_plane,
        ):
            name = identity or default_identity()
            console.print(f"worker {name} polling: {', '.join(task_queues)}")
            console.print(f"artifacts served at {data_plane.url} from {data_plane.root}")
            stage_worker = StageWorker(
                session.client,
                task_queues=task_queues,
                workflows=workflows,
                identity=name,
                settings=settings,
                data_plane=data_plane,
                server_url=DataSettings().server_url,
            )
            await _serve(stage_worker, settings)

    run_async(main)


def up(
    queue: list[str] = typer.Option(UP_QUEUES, "--queue", "-q", help="Queues to serve."),
    tags: str = typer.Option("", "--tags", "-t", help="Tags the local worker carries."),
    ui_port: int = typer.Option(8233, help="Temporal UI port (0: no UI)."),
    path: list[Path] = typer.Option([], "--path", help="Add to sys.path for stage functions."),
) -> None:
    """Run everything on this machine and stay up: embedded Temporal and a worker."""
    for entry in [Path.cwd(), *path]:
        sys.path.insert(0, str(entry.resolve()))
    settings = EngineSettings()
    if ui_port and not is_listening(f"127.0.0.1:{ui_port}"):
        settings = settings.model_copy(update={"temporal_ui_port": ui_port})
    worker_settings = WorkerSettings()
    task_queues = task_queues_for(queue, _split_tags(tags))

    async def main() -> None:
        async with (
            engine_session(settings, owner="up") as session,
            embedded_data_server(settings) as server_url,
            worker_data_plane(settings) as data_plane,
        ):
            embedded = session.embedded
            where = embedded.address if embedded else "the configured cluster"
            console.print(f"[bold]stageflow up[/bold]: Temporal at {where}")
            if embedded and settings.temporal_ui_port:
                console.print(f"Temporal UI: http://127.0.0.1:{settings.temporal_ui_port}")
            console.print(f"worker polling: {', '.join(task_queues)}")
            console.print(f"data server: {server_url}; worker artifacts: {data_plane.url}")
            console.print("submit with `stageflow run FILE --detach`; Ctrl-C stops")
            stage_worker = StageWorker(
                session.client,
                task_queues=task_queues,
                settings=worker_settings,
                data_plane=data_plane,
                server_url=server_url,
            )
            await _serve(stage_worker, worker_settings)

    run_async(main)
