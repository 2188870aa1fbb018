"""``stageflow run FILE``: run a pipeline and show it live until it ends."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from stageflow.cli.common import EXIT_INVALID, err_console, load_spec, run_async, show_stage_logs
from stageflow.cli.session import command_session, follow_run
from stageflow.engine.runs import compile_run, new_run_id, start_run
from stageflow.settings import EngineSettings


def run(
    file: Path = typer.Argument(..., help="Pipeline spec (YAML)."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Override a param: -p n=5 (repeatable)."
    ),
    detach: bool = typer.Option(False, "--detach", "-d", help="Submit and print the run id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document at the end."),
    run_id: str | None = typer.Option(None, "--run-id", help="Use this run id."),
) -> None:
    """Run a pipeline. With no TEMPORAL_ADDRESS, an embedded Temporal and worker do the work."""
    pipeline = load_spec(file, param)
    if not as_json:
        show_stage_logs()
    # Failed attempts are shown in the table; the SDK's tracebacks would only bury it.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    settings = EngineSettings()
    run_input = compile_run(
        pipeline,
        run_id=run_id or new_run_id(pipeline.name),
        heartbeat_timeout=settings.heartbeat_timeout,
    )
    queues = [] if detach else [stage.task_queue for stage in run_input.stages]

    async def main() -> int:
        async with command_session(owner="run", task_queues=queues, settings=settings) as session:
            if detach and session.embedded is not None and session.embedded.owned:
                err_console.print(
                    "[red]error:[/red] --detach needs an engine that outlives this command: "
                    "start `stageflow up` in another terminal, or set TEMPORAL_ADDRESS"
                )
                return EXIT_INVALID
            handle = await start_run(session.client, run_input)
            if detach:
                document = {"run_id": run_input.run_id, "status": "running"}
                print(json.dumps(document) if as_json else run_input.run_id)
                return 0
            return await follow_run(session, run_input.run_id, handle, as_json)

    raise typer.Exit(run_async(main))
