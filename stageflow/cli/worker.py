"""``stageflow worker`` (serve task queues) and ``stageflow up`` (everything on one machine)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import typer

from stageflow.cli.common import console, run_async, show_stage_logs
from stageflow.cli.dataplane import embedded_data_server, worker_data_plane
from stageflow.engine.client import engine_session, metrics_runtime
from stageflow.engine.devserver import is_listening
from stageflow.settings import DataSettings, EngineSettings, LogSettings, WorkerSettings
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.lifecycle import WorkerLifecycle
from stageflow.worker.runner import StageWorker, default_identity, task_queues_for

UP_QUEUES = ["default", "ml", "api"]


def _split_tags(tags: str) -> list[str]:
    return [tag.strip() for tag in tags.split(",") if tag.strip()]


@asynccontextmanager
async def _lifecycle(
    worker: StageWorker, data_plane: DataPlane, queues: list[str], tags: list[str]
) -> AsyncIterator[WorkerLifecycle]:
    """Log capture, shipping and registration around ``worker`` (see worker/lifecycle.py)."""
    log_format = LogSettings().format
    lifecycle = WorkerLifecycle(
        worker_id=worker.identity,
        queues=queues,
        tags=tags,
        staging_dir=data_plane.root,
        data_url=data_plane.url,
        token=data_plane.token,
        settings=worker.settings,
        log_format=log_format,
        running_stages=lambda: worker.running_stages,
    )
    async with lifecycle:
        worker.activities.events = lifecycle.events
        if lifecycle.server_url:
            console.print(f"reporting to the control plane at {lifecycle.server_url}")
        # The console is this process's own output: keep it out of the stages' captured lines.
        console.file = lifecycle.capture.real_stdout
        try:
            if log_format != "json":
                show_stage_logs()
            yield lifecycle
        finally:
            console.file = None  # type: ignore[assignment]  # back to following sys.stdout


async def _serve(worker: StageWorker, settings: WorkerSettings, lifecycle: WorkerLifecycle) -> None:
    """Run until SIGINT/SIGTERM, then drain: running stages get the grace period to finish."""
    loop = asyncio.get_running_loop()
    stage_threads = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="stage")
    loop.set_default_executor(stage_threads)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()
        console.print(f"stopping: running stages have {settings.shutdown_grace:g}s to finish")
        await lifecycle.drain(worker)
    # A sync stage cancelled after the grace period keeps its thread until it returns; don't
    # let asyncio.run wait for it on the way out (the process exit ends it).
    loop.set_default_executor(ThreadPoolExecutor(1))
    stage_threads.shutdown(wait=False, cancel_futures=True)


def worker(
    queue: list[str] = typer.Option(
        ["default"], "--queue", "-q", help="Queue to serve (repeatable)."
    ),
    tags: str = typer.Option("", "--tags", "-t", help="Comma-separated tags this worker carries."),
    path: list[Path] = typer.Option([], "--path", help="Add to sys.path for stage functions."),
    workflows: bool = typer.Option(True, help="Also run pipeline workflow tasks."),
    identity: str | None = typer.Option(None, help="Name shown for this worker."),
    concurrency: int | None = typer.Option(None, help="Stages at once per task queue."),
    server: str | None = typer.Option(
        None,
        "--server",
        help="Control plane URL to register with and ship stage logs to "
        "(default: STAGEFLOW_SERVER_URL; none: logs stay local).",
    ),
    cost_per_hour: float | None = typer.Option(
        None, "--cost-per-hour", min=0, help="What this machine costs per hour (reported)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Serve the Temporal SDK's metrics for Prometheus here."
    ),
) -> None:
    """Serve stages on task queues; routing by tags is explained in `engine/routing.py`."""
    for entry in path:
        sys.path.insert(0, str(entry.resolve()))
    settings = WorkerSettings()
    overrides = {
        "concurrency": concurrency or None,
        "server_url": server,
        "cost_per_hour": cost_per_hour,
    }
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    tag_list = _split_tags(tags)
    task_queues = task_queues_for(queue, tag_list)

    engine_settings = EngineSettings()
    metrics_port = metrics_port or settings.metrics_port
    runtime = metrics_runtime(metrics_port) if metrics_port else None

    async def main() -> None:
        async with (
            engine_session(engine_settings, owner="worker", runtime=runtime) as session,
            worker_data_plane(engine_settings) as data_plane,
        ):
            name = identity or default_identity()
            console.print(f"worker {name} polling: {', '.join(task_queues)}", markup=False)
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
            async with _lifecycle(stage_worker, data_plane, queue, tag_list) as lifecycle:
                await _serve(stage_worker, settings, lifecycle)

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
    tag_list = _split_tags(tags)
    task_queues = task_queues_for(queue, tag_list)

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
            console.print(f"worker polling: {', '.join(task_queues)}", markup=False)
            console.print(f"data server: {server_url}; worker artifacts: {data_plane.url}")
            console.print("submit with `stageflow run FILE --detach`; Ctrl-C stops")
            stage_worker = StageWorker(
                session.client,
                task_queues=task_queues,
                settings=worker_settings,
                data_plane=data_plane,
                server_url=server_url,
            )
            async with _lifecycle(stage_worker, data_plane, queue, tag_list) as lifecycle:
                await _serve(stage_worker, worker_settings, lifecycle)

    run_async(main)
