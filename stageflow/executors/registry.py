"""Finding executors by name: the built-ins, then the ``stageflow.executors`` entry points.

Executors are imported only when a pipeline names them, so an executor whose heavy library
(torch, pyspark, openai) is not installed costs nothing until it is used, and then fails with
an error that names the extra to install.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points

from stageflow.errors import ExecutorNotFoundError
from stageflow.executors.base import Executor

__all__ = ["BUILTIN_EXECUTORS", "available_executors", "executor_names", "get_executor"]

ENTRY_POINT_GROUP = "stageflow.executors"

BUILTIN_EXECUTORS: dict[str, str] = {
    "python": "stageflow.executors.python:PythonExecutor",
    "shell": "stageflow.executors.shell:ShellExecutor",
    "transfer": "stageflow.executors.transfer:TransferExecutor",
    "sql": "stageflow.executors.sql:SqlExecutor",
    "train": "stageflow.executors.train:TrainExecutor",
    "infer": "stageflow.executors.infer:InferExecutor",
    "llm": "stageflow.executors.llm:LlmExecutor",
    "aggregate": "stageflow.executors.aggregate:AggregateExecutor",
    "load": "stageflow.executors.load:LoadExecutor",
    "notify": "stageflow.executors.notify:NotifyExecutor",
    "external": "stageflow.executors.external:ExternalExecutor",
    "cleanup": "stageflow.executors.cleanup:CleanupExecutor",
}
"""Name -> ``module:Class``. Their modules import only light libraries at import time."""


def _load(target: str) -> type[Executor]:
    module, _, attr = target.partition(":")
    loaded = getattr(import_module(module), attr)
    if not (isinstance(loaded, type) and issubclass(loaded, Executor)):
        raise ExecutorNotFoundError(f"{target} is not a stageflow Executor subclass")
    return loaded


@cache
def _entry_points() -> dict[str, str]:
    return {
        point.name: point.value
        for point in entry_points(group=ENTRY_POINT_GROUP)
        if point.name not in BUILTIN_EXECUTORS
    }


def executor_names() -> list[str]:
    """Names of every executor this process knows (nothing is imported)."""
    return sorted({*BUILTIN_EXECUTORS, *_entry_points()})


@cache
def get_executor(name: str) -> type[Executor]:
    """The executor called ``name``; ``ExecutorNotFoundError`` lists the installed ones."""
    target = BUILTIN_EXECUTORS.get(name) or _entry_points().get(name)
    if target is None:
        known = ", ".join(executor_names())
        raise ExecutorNotFoundError(
            f"unknown executor {name!r} (installed: {known}); third-party executors register "
            f"under the {ENTRY_POINT_GROUP!r} entry point group"
        )
    return _load(target)


def available_executors() -> dict[str, type[Executor]]:
    """Every executor this process can import, by name."""
    return {name: get_executor(name) for name in executor_names()}
