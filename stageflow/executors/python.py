"""``uses: python``: call a user function ``module:callable`` with the stage's parameters.

The other ``with`` keys become keyword arguments; a ``ctx`` parameter receives the
``StageContext``. Async functions are awaited; plain ones run in a thread so the worker keeps
heartbeating. The function returns a dict (its outputs) or None.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field

from stageflow.errors import StageError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.worker.context import StageContext

__all__ = ["PythonExecutor", "import_callable"]


class FunctionNotFound(StageError):
    """The function cannot be imported on this worker; retrying here will not help."""

    non_retryable = True


class PythonParams(ExecutorParams):
    model_config = ConfigDict(extra="allow")
    function: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="What to call, as module:callable (e.g. mypkg.steps:square).",
    )


def import_callable(target: str) -> Callable[..., Any]:
    """The object named by ``module:attr.path``, with an actionable error when it is missing."""
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionNotFound(
            f"cannot import {module_name!r} for {target!r}: {exc}. Install it on the worker, or "
            "start the worker with --path pointing at the directory that holds it"
        ) from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise FunctionNotFound(f"{module_name!r} has no attribute {attr_path!r} ({target})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FunctionNotFound(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


class PythonExecutor(Executor):
    name = "python"
    Params = PythonParams
    native_paths = True

    async def run(self, params: PythonParams, ctx: StageContext) -> dict[str, Any]:
        function = import_callable(params.function)
        kwargs = dict(params.model_extra or {})
        signature = inspect.signature(function)
        if "ctx" in signature.parameters:
            kwargs["ctx"] = ctx
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise FunctionNotFound(f"{params.function}: {exc}") from None
        if inspect.iscoroutinefunction(function):
            result = await function(**kwargs)
        else:
            result = await asyncio.to_thread(function, **kwargs)
        return result  # type: ignore[no-any-return]
