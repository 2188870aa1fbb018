"""The ``stageflow`` command: one typer app, one module per command group."""

from __future__ import annotations

import logging

import typer

from stageflow.cli import run as run_cmd
from stageflow.cli import runs as runs_cmd
from stageflow.cli import schedule as schedule_cmd
from stageflow.cli import validate as validate_cmd
from stageflow.cli import worker as worker_cmd

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
app.add_typer(runs_cmd.app, name="runs", help="List, inspect and steer runs.")
app.add_typer(schedule_cmd.app, name="schedule", help="Cron schedules of pipelines.")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()
