"""``stageflow validate FILE``: check a spec without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from stageflow.cli.common import console, load_spec


def validate(
    files: list[Path] = typer.Argument(..., help="Pipeline spec files to check."),
) -> None:
    """Check pipeline specs; print every problem with file, line and field."""
    for file in files:
        pipeline = load_spec(file)
        console.print(
            f"[green]ok[/green] {file}: pipeline {pipeline.name!r}, {len(pipeline.stages)} stages"
        )
