"""Stage functions of examples/hello.yaml (importable because they sit beside the spec)."""

from __future__ import annotations

from stageflow import StageContext


def make_numbers(count: int) -> dict[str, list[int]]:
    return {"numbers": list(range(1, count + 1))}


def square(x: int, ctx: StageContext) -> dict[str, int]:
    ctx.logger.info("squaring %s", x)
    return {"value": x * x}


def total(values: list[int]) -> dict[str, int]:
    return {"total": sum(values)}
