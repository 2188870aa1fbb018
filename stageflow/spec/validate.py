"""Loading a spec file and checking it whole: fields, references, cycles and executors.

Every problem is collected (not just the first) and reported with file, line and field, so a
user fixes a spec in one pass. ``stageflow validate`` and ``stageflow run`` both go through
``load_pipeline``; nothing starts until it passes.
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stageflow.errors import SpecError, SpecIssue, StageflowError
from stageflow.spec.loader import Positions, read_yaml
from stageflow.spec.model import Pipeline
from stageflow.spec.templates import find_references

__all__ = ["check_pipeline", "load_pipeline", "parse_pipeline"]

Loc = tuple[str | int, ...]


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and fully validate the spec at ``path``; raise ``SpecError`` listing every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        issue = SpecIssue(str(file), None, None, "", f"cannot read: {exc.strerror}")
        raise SpecError([issue]) from None
    return parse_pipeline(text, str(file))


def parse_pipeline(text: str, filename: str = "<string>") -> Pipeline:
    """Validate YAML ``text`` as a pipeline; ``filename`` is only used in messages."""
    document = read_yaml(text, filename)
    if document.issues:
        raise SpecError(document.issues)
    if not isinstance(document.data, dict):
        raise SpecError([SpecIssue(filename, 1, 1, "", "a pipeline spec must be a mapping")])
    try:
        pipeline = Pipeline.model_validate(document.data)
    except ValidationError as exc:
        errors = exc.errors()
        issues = [_issue(filename, document.positions, tuple(e["loc"]), e["msg"]) for e in errors]
        # Report the cross-stage problems too, so one pass shows everything: check what is
        # left once the fields in error are dropped (when that still makes a pipeline).
        rest = _without(document.data, [tuple(e["loc"])[:3] for e in errors])
        try:
            partial = Pipeline.model_validate(rest)
        except ValidationError:
            raise SpecError(issues) from None
        more = check_pipeline(partial, filename, document.positions)
        raise SpecError(issues + [issue for issue in more if issue not in issues]) from None
    issues = check_pipeline(pipeline, filename, document.positions)
    if issues:
        raise SpecError(issues)
    return pipeline


def _without(data: dict[str, Any], locs: list[Loc]) -> dict[str, Any]:
    """A copy of ``data`` with the value at each ``loc`` removed."""
    copy = copy_module.deepcopy(data)
    for loc in locs:
        if not loc:
            continue
        parent: Any = copy
        for key in loc[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    return copy


def check_pipeline(
    pipeline: Pipeline, filename: str = "<pipeline>", positions: Positions | None = None
) -> list[SpecIssue]:
    """Problems that span fields or stages. Empty when the pipeline can run."""
    positions = positions or Positions()
    problems: list[tuple[Loc, str]] = []
    problems += _check_needs(pipeline)
    problems += _check_cycles(pipeline)
    problems += _check_templates(pipeline)
    problems += _check_executors(pipeline)
    return [_issue(filename, positions, loc, message) for loc, message in problems]


def _issue(filename: str, positions: Positions, loc: Loc, message: str) -> SpecIssue:
    if loc and loc[-1] == "[key]":  # pydantic's mark for an error in a mapping key itself
        loc = loc[:-1]
        line, column = positions.locate_key(loc)
    else:
        line, column = positions.locate(loc)
    message = message.removeprefix("Value error, ")
    return SpecIssue(filename, line, column, ".".join(map(str, loc)), message)


def _check_needs(pipeline: Pipeline) -> Iterable[tuple[Loc, str]]:
    for name, stage in pipeline.stages.items():
        if stage.when != "success" and not stage.needs:
            yield (
                ("stages", name, "when"),
                f"`when: {stage.when}` reacts to the stages in `needs`, and this stage has none",
            )
        for index, need in enumerate(stage.needs):
            if need == name:
                yield ("stages", name, "needs", index), "a stage cannot need itself"
            elif need not in pipeline.stages:
                known = ", ".join(sorted(pipeline.stages))
                yield ("stages", name, "needs", index), f"unknown stage {need!r} (stages: {known})"


def _check_cycles(pipeline: Pipeline) -> Iterable[tuple[Loc, str]]:
    state: dict[str, str] = {}
    reported: set[frozenset[str]] = set()

    def visit(name: str, trail: list[str]) -> Iterable[tuple[Loc, str]]:
        state[name] = "active"
        for need in pipeline.stages[name].needs:
            if need not in pipeline.stages or need == name:
                continue
            if state.get(need) == "active":
                cycle = [*trail[trail.index(need) :], name, need] if need in trail else [name, need]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    yield ("stages", name, "needs"), "cycle: " + " -> ".join(cycle)
            elif need not in state:
                yield from visit(need, [*trail, name])
        state[name] = "done"

    for name in pipeline.stages:
        if name not in state:
            yield from visit(name, [])


def ancestors(pipeline: Pipeline, name: str) -> set[str]:
    """Every stage that ``name`` waits for, directly or through others."""
    seen: set[str] = set()
    stack = list(pipeline.stages[name].needs)
    while stack:
        need = stack.pop()
        if need in seen or need not in pipeline.stages:
            continue
        seen.add(need)
        stack.extend(pipeline.stages[need].needs)
    return seen


def _check_templates(pipeline: Pipeline) -> Iterable[tuple[Loc, str]]:
    for name, stage in pipeline.stages.items():
        upstream = ancestors(pipeline, name)
        fields: list[tuple[str, Any]] = [("with", stage.with_)]
        if stage.matrix is not None:
            fields.append(("matrix", stage.matrix))
            for key, value in stage.matrix.items():
                is_template = isinstance(value, str) and any(find_references(value))
                if not isinstance(value, list) and not is_template:
                    loc: Loc = ("stages", name, "matrix", key)
                    yield loc, "a matrix entry must be a list or a ${...} that yields one"
        for field, value in fields:
            for ref in find_references(value):
                loc = ("stages", name, field, *ref.location)
                yield from _check_reference(
                    pipeline, name, field, ref.path, ref.text, upstream, loc
                )


def _check_reference(
    pipeline: Pipeline,
    stage_name: str,
    field: str,
    path: tuple[str, ...],
    text: str,
    upstream: set[str],
    loc: Loc,
) -> Iterable[tuple[Loc, str]]:
    scope = path[0]
    stage = pipeline.stages[stage_name]
    if scope == "params":
        if len(path) < 2 or path[1] not in pipeline.params:
            known = ", ".join(sorted(pipeline.params)) or "none declared"
            yield loc, f"{text}: unknown param (params: {known})"
    elif scope == "matrix":
        if field == "matrix":
            yield loc, f"{text}: a matrix cannot refer to itself"
        elif stage.matrix is None or len(path) < 2 or path[1] not in stage.matrix:
            known = ", ".join(sorted(stage.matrix or {})) or "this stage has no matrix"
            yield loc, f"{text}: unknown matrix key ({known})"
    elif scope == "run":
        if len(path) != 2 or path[1] not in {"id", "date", "started_at", "pipeline"}:
            yield loc, f"{text}: unknown run field (run.id, run.date, run.started_at, run.pipeline)"
    elif scope in pipeline.stages:
        if len(path) < 2 or path[1] != "outputs":
            yield loc, f"{text}: refer to a stage's results as ${{{scope}.outputs.<key>}}"
        elif scope == stage_name:
            yield loc, f"{text}: a stage cannot use its own outputs"
        elif scope not in upstream:
            yield loc, f"{text}: uses stage {scope!r} but does not need it: add it to needs"
    else:
        known = ", ".join(sorted(pipeline.stages))
        yield loc, f"{text}: unknown stage or scope {scope!r} (params, matrix, run, or: {known})"


def _check_executors(pipeline: Pipeline) -> Iterable[tuple[Loc, str]]:
    from stageflow.executors.registry import get_executor

    for name, stage in pipeline.stages.items():
        try:
            executor = get_executor(stage.uses)
        except StageflowError as exc:
            yield ("stages", name, "uses"), str(exc)
            continue
        for loc, message in executor.check_params(stage.with_):
            yield ("stages", name, "with", *loc), message
