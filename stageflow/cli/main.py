"""The ``stageflow`` command: one typer app, one module per command group."""

from __future__ import annotations

import logging
import os
import sys

import typer

from stageflow.cli import lake as lake_cmd
from stageflow.cli import logs as logs_cmd
from stageflow.cli import run as run_cmd
from stageflow.cli import runs as runs_cmd
from stageflow.cli import schedule as schedule_cmd
from stageflow.cli import server as server_cmd
from stageflow.cli import transfer as transfer_cmd
from stageflow.cli import validate as validate_cmd
from stageflow.cli import worker as worker_cmd
from stageflow.cli import workers as workers_cmd
from stageflow.settings import LogSettings
from stageflow.worker.jsonlog import configure_process_logging

app = typer.Typer(
    name="stageflow",
    help="Multi-stage data and ML pipelines on Temporal, across machines with no shared disk.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(run_cmd.run)
app.command()(validate_cmd.validate)
app.command()(worker_cmd.worker)
app.command()(worker_cmd.up)
app.command()(server_cmd.server)
app.command()(transfer_cmd.transfer)
app.command()(transfer_cmd.gc)
app.command()(logs_cmd.logs)
app.command()(workers_cmd.workers)
app.add_typer(runs_cmd.app, name="runs", help="List, inspect and steer runs.")
app.add_typer(schedule_cmd.app, name="schedule", help="Cron schedules of pipelines.")
app.add_typer(lake_cmd.app, name="lake", help="The data lake: list, query and load tables.")


def main() -> None:
    configure_process_logging(LogSettings().format)
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    # Temporal's Rust core keeps threads that can crash the interpreter while it finalizes
    # (seen here: "PyGILState_Release ... finalizing"). Everything is closed by now, so flush
    # and leave without finalizing.
    logging.shutdown()
    if isinstance(code, str):
        print(code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
