"""The pipeline model: what a YAML spec means, and the Python API that builds the same thing.

>>> Pipeline(name="hello", stages={"make": Stage(uses="python", with_={"function": "m:f"})})

Field-level checks live here (types, names, durations, cron); checks across fields and stages
(references, cycles, executors) live in ``validate``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from stageflow.spec.durations import parse_duration
from stageflow.spec.templates import RESERVED_SCOPES

__all__ = ["Pipeline", "RetryPolicy", "Stage"]

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: seconds, or a string such as ``500ms``, ``10s``, ``5m``, ``1h30m``."""

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _stage_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"invalid stage name {name!r}: start with a letter; letters, digits, _ -")
    if name in RESERVED_SCOPES:
        raise ValueError(f"stage name {name!r} is reserved for templates")
    return name


StageName = Annotated[str, AfterValidator(_stage_name)]
"""A stage name, checked as a key of ``stages`` so an error is located at that stage."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(_Model):
    """How a failed stage attempt is retried (Temporal's activity retry policy)."""

    max_attempts: int = Field(3, ge=1, description="Attempts in all, the first included.")
    initial_interval: Seconds = Field(1.0, description="Wait before the first retry.")
    backoff: float = Field(2.0, ge=1.0, description="Each wait is this many times the last.")
    max_interval: Seconds | None = Field(None, description="Longest wait between attempts.")
    non_retryable: list[str] = Field(
        default_factory=list,
        description="Error type names (e.g. ValueError) that fail the stage at once.",
    )


class Stage(_Model):
    """One step of a pipeline, run as a Temporal activity by a worker that can take it."""

    uses: str = Field(description="Executor name: python, shell, or one from an entry point.")
    queue: str = Field("default", description="Task queue whose workers run this stage.")
    tags: list[str] = Field(default_factory=list, description="Tags the worker must all carry.")
    needs: list[str] = Field(default_factory=list, description="Stages that must finish first.")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="Executor parameters; may use ${...}."
    )
    matrix: dict[str, Any] | None = Field(
        None, description="Fan-out: one instance per combination of these lists."
    )
    max_parallel: int | None = Field(
        None, ge=1, description="Most matrix instances running at once (default: all)."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: Seconds = Field(3600.0, description="Longest one attempt may run.")
    heartbeat_timeout: Seconds | None = Field(
        None, description="Silence after which the worker is presumed lost (default: setting)."
    )
    gate: Literal["approve"] | None = Field(None, description="Wait for an approval first.")
    when: Literal["success", "failure", "always"] = Field(
        "success",
        description="Run when every need succeeded (success), when one failed (failure: "
        "e.g. an alert), or once all are done whatever happened (always: e.g. cleanup).",
    )
    persist: bool = Field(
        False, description="Push the artifacts in the outputs to the data server."
    )
    description: str = ""

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not QUEUE.match(value):
            raise ValueError(f"invalid queue name {value!r}: use letters, digits, '_', '.', '-'")
        return value

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not QUEUE.match(tag):
                raise ValueError(f"invalid tag {tag!r}: use letters, digits, '_', '.', '-'")
        return sorted(set(value))


class Pipeline(_Model):
    """A named graph of stages with parameters and an optional cron schedule."""

    name: str = Field(description="Pipeline name; run ids start with it.")
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description="Overridable with -p k=v.")
    schedule: str | None = Field(None, description="Cron expression for a Temporal Schedule.")
    stages: dict[StageName, Stage] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _pipeline_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"invalid name {value!r}: start with a letter; letters, digits, _ -")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}: expected e.g. '0 6 * * *'")
        return value

    def with_params(self, overrides: dict[str, Any]) -> Pipeline:
        """A copy whose params are updated by ``overrides`` (which must name known params)."""
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise KeyError(f"unknown param(s) {', '.join(unknown)} (known: {known})")
        return self.model_copy(update={"params": {**self.params, **overrides}})

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, keyed as in YAML (``with``, not ``with_``)."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json")
