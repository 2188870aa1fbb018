"""The one base class every executor implements.

An executor turns a stage's rendered ``with`` parameters into outputs. Implement ``run``; the
base and the worker own everything around it (heartbeats, checkpoints, cancellation, logs), so
``run`` only has to do the work, call ``ctx.checkpoint``/``ctx.progress`` as it goes, and return a
small JSON-able dict. Never override ``execute``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from stageflow.spec.templates import find_references

if TYPE_CHECKING:
    from stageflow.worker.context import StageContext

__all__ = ["Executor", "ExecutorParams"]


class ExecutorParams(BaseModel):
    """Base of an executor's ``with`` schema: unknown keys are errors unless a subclass allows."""

    model_config = ConfigDict(extra="forbid")


class Executor(ABC):
    """Runs one kind of stage. Subclasses set ``name`` and ``Params`` and implement ``run``."""

    name: ClassVar[str]
    Params: ClassVar[type[ExecutorParams]] = ExecutorParams
    native_paths: ClassVar[bool] = False
    """Artifact refs in ``with`` arrive as ``pathlib.Path`` (True) or as ``str`` (False)."""
    fetch_inputs: ClassVar[bool] = True
    """False: refs in ``with`` arrive as they are (dicts) and nothing is fetched, for
    executors that manage artifacts rather than read them (``cleanup``)."""

    @classmethod
    def check_params(cls, with_: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems in ``with`` that can be seen before the run, as ``(path, message)`` pairs.

        Values holding a ``${...}`` template are only known at run time, so errors about them
        are left for the run; unknown keys, missing keys and wrong literal values are reported.
        """
        templated = {key for key, value in with_.items() if any(find_references(value))}
        try:
            cls.Params.model_validate(with_)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                loc = tuple(error["loc"])
                if loc and loc[0] in templated and error["type"] != "extra_forbidden":
                    continue
                problems.append((loc, error["msg"]))
            return problems
        return []

    @abstractmethod
    async def run(self, params: Any, ctx: StageContext) -> dict[str, Any]:
        """Do the stage's work and return its outputs (a small JSON-able dict)."""

    async def execute(self, with_: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        """Validate the rendered parameters, then run. Called by the worker."""
        params = self.Params.model_validate(with_)
        return await self.run(params, ctx)
