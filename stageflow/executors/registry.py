"""Finding executors by name: the built-ins, then the ``stageflow.executors`` entry points."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from stageflow.errors import ExecutorNotFoundError
from stageflow.executors.base import Executor

__all__ = ["available_executors", "get_executor"]

ENTRY_POINT_GROUP = "stageflow.executors"


@cache
def available_executors() -> dict[str, type[Executor]]:
    """Every executor this process can run, by name."""
    from stageflow.executors.python import PythonExecutor
    from stageflow.executors.shell import ShellExecutor
    from stageflow.executors.transfer import TransferExecutor

    found: dict[str, type[Executor]] = {
        "python": PythonExecutor,
        "shell": ShellExecutor,
        "transfer": TransferExecutor,
    }
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in found:
            found[point.name] = point.load()
    return found


def get_executor(name: str) -> type[Executor]:
    """The executor called ``name``; ``ExecutorNotFoundError`` lists the installed ones."""
    executors = available_executors()
    if name not in executors:
        known = ", ".join(sorted(executors))
        raise ExecutorNotFoundError(
            f"unknown executor {name!r} (installed: {known}); third-party executors register "
            f"under the {ENTRY_POINT_GROUP!r} entry point group"
        )
    return executors[name]
