"""What every command shares: the console, async entry, error display and ``-p k=v`` parsing."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from stageflow.errors import SpecError, StageflowError
from stageflow.spec.model import Pipeline
from stageflow.spec.validate import load_pipeline

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "console",
    "err_console",
    "load_spec",
    "parse_params",
    "run_async",
    "show_stage_logs",
]

console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; stageflow errors become a red message and exit status 1 (2 for specs)."""
    try:
        return asyncio.run(main())
    except SpecError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    except StageflowError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


class _StageLogHandler(logging.Handler):
    """Prints what stages log as ``time stage[i] message``, above the live table if any."""

    def emit(self, record: logging.LogRecord) -> None:
        stage = getattr(record, "stage", record.name)
        style = "red" if record.levelno >= logging.ERROR else "dim"
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = Text.assemble((f"{when} {stage} ", style), record.getMessage())
        console.print(text, highlight=False, soft_wrap=True)


def show_stage_logs() -> None:
    """Print stage logs of in-process workers as they come (once per process)."""
    logger = logging.getLogger("stageflow.stage")
    if not any(isinstance(h, _StageLogHandler) for h in logger.handlers):
        logger.addHandler(_StageLogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["n=5", "name=x"]`` to ``{"n": 5, "name": "x"}``; values are read as YAML scalars."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="-p")
        try:
            params[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            params[key.strip()] = raw
    return params


def load_spec(file: Path, params: list[str] | None = None) -> Pipeline:
    """Load and validate a spec, apply ``-p`` overrides, and make its directory importable."""
    try:
        pipeline = load_pipeline(file)
    except SpecError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    if params:
        try:
            pipeline = pipeline.with_params(parse_params(params))
        except KeyError as exc:
            problem = escape(f"{file}: {exc.args[0]}")
            err_console.print(f"[red]error:[/red] {problem}", highlight=False)
            raise typer.Exit(EXIT_INVALID) from None
    spec_dir = str(file.resolve().parent)
    if spec_dir not in sys.path:
        sys.path.insert(0, spec_dir)
    return pipeline
