"""Stage functions that tests/executors/test_python.py runs through the python executor."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from stageflow.worker.context import StageContext

NOT_CALLABLE = 42
CALLS: list[dict[str, Any]] = []


def add(a: int, b: int = 10) -> dict[str, Any]:
    return {"sum": a + b, "thread": threading.get_ident()}


async def multiply(a: int, b: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"product": a * b, "thread": threading.get_ident()}


def with_ctx(x: int, ctx: StageContext) -> dict[str, Any]:
    ctx.checkpoint({"done": x})
    ctx.progress(1, 2, unit="rows")
    return {
        "x": x,
        "run_id": ctx.run_id,
        "pipeline": ctx.pipeline,
        "stage": ctx.stage,
        "attempt": ctx.attempt,
        "stage_id": ctx.stage_id,
        "ctx_type": type(ctx).__name__,
    }


async def async_with_ctx(ctx: StageContext) -> dict[str, Any]:
    return {"resume": ctx.resume_state(), "instance": ctx.instance, "matrix": ctx.matrix}


def takes_kwargs(**kwargs: Any) -> dict[str, Any]:
    return {"keys": sorted(kwargs)}


def takes_nothing() -> dict[str, Any]:
    return {"ok": True}


def returns_none(**kwargs: Any) -> None:
    CALLS.append(kwargs)


def raises_value_error(message: str) -> None:
    raise ValueError(message)


def raises_type_error() -> None:
    raise TypeError("raised by the user's own code")


async def async_raises() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("async boom")


class Holder:
    @staticmethod
    def method(v: str) -> dict[str, str]:
        return {"upper": v.upper()}

    class Inner:
        @staticmethod
        def deep() -> dict[str, str]:
            return {"where": "inner"}


def record_a(a: int) -> dict[str, int]:
    CALLS.append({"a": a})
    return {"a": a}
