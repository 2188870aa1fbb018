"""stageflow: multi-stage data and ML pipelines on Temporal, across machines with no shared disk.

The public names load lazily, so importing a submodule (as the workflow sandbox does for
``stageflow.engine.workflow``) does not pull in the CLI, pydantic models or executors.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "Executor",
    "ExecutorParams",
    "Pipeline",
    "RetryPolicy",
    "SpecError",
    "Stage",
    "StageContext",
    "StageflowError",
    "load_pipeline",
    "parse_pipeline",
]
__version__ = "0.1.0"

_WHERE = {
    "Executor": "stageflow.executors.base",
    "ExecutorParams": "stageflow.executors.base",
    "Pipeline": "stageflow.spec.model",
    "RetryPolicy": "stageflow.spec.model",
    "SpecError": "stageflow.errors",
    "Stage": "stageflow.spec.model",
    "StageContext": "stageflow.worker.context",
    "StageflowError": "stageflow.errors",
    "load_pipeline": "stageflow.spec.validate",
    "parse_pipeline": "stageflow.spec.validate",
}

if TYPE_CHECKING:
    from stageflow.errors import SpecError, StageflowError
    from stageflow.executors.base import Executor, ExecutorParams
    from stageflow.spec.model import Pipeline, RetryPolicy, Stage
    from stageflow.spec.validate import load_pipeline, parse_pipeline
    from stageflow.worker.context import StageContext


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'stageflow' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
