"""Tests for the ``python`` executor, run directly (no Temporal) with a real StageContext."""

from __future__ import annotations

import threading
from typing import Any

import exec_stage_functions as funcs
import pytest
from pydantic import ValidationError

from stageflow.errors import StageError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.python import FunctionNotFound, PythonExecutor, import_callable
from stageflow.executors.registry import available_executors, get_executor
from stageflow.worker.context import StageContext

MOD = "exec_stage_functions"


@pytest.fixture
def ctx() -> StageContext:
    return StageContext(run_id="run-1", pipeline="pipe", stage="step", attempt=1)


async def _run(with_: dict[str, Any], ctx: StageContext) -> Any:
    return await PythonExecutor().execute(with_, ctx)


def test_registry_knows_the_python_executor() -> None:
    assert get_executor("python") is PythonExecutor
    assert available_executors()["python"] is PythonExecutor
    assert PythonExecutor.name == "python"


# --- calling functions -------------------------------------------------------------------------


async def test_sync_function_gets_the_other_keys_as_kwargs(ctx: StageContext) -> None:
    result = await _run({"function": f"{MOD}:add", "a": 2, "b": 5}, ctx)
    assert result["sum"] == 7


async def test_sync_function_defaults_apply(ctx: StageContext) -> None:
    assert (await _run({"function": f"{MOD}:add", "a": 2}, ctx))["sum"] == 12


async def test_sync_function_runs_off_the_event_loop_thread(ctx: StageContext) -> None:
    result = await _run({"function": f"{MOD}:add", "a": 1}, ctx)
    assert result["thread"] != threading.get_ident()


async def test_async_function_is_awaited_on_the_loop(ctx: StageContext) -> None:
    result = await _run({"function": f"{MOD}:multiply", "a": 3, "b": 4}, ctx)
    assert result["product"] == 12
    assert result["thread"] == threading.get_ident()


async def test_ctx_is_passed_when_the_function_takes_it(ctx: StageContext) -> None:
    result = await _run({"function": f"{MOD}:with_ctx", "x": 5}, ctx)
    assert result == {
        "x": 5,
        "run_id": "run-1",
        "pipeline": "pipe",
        "stage": "step",
        "attempt": 1,
        "stage_id": "run-1/step",
        "ctx_type": "StageContext",
    }
    # The function's checkpoint and progress went into this very context.
    assert ctx.resume_state() == {"done": 5}
    assert ctx.heartbeat_details() == {
        "checkpoint": {"done": 5},
        "progress": {"done": 1, "total": 2, "unit": "rows"},
    }


async def test_async_function_gets_ctx_too() -> None:
    ctx = StageContext(
        run_id="r",
        pipeline="p",
        stage="s",
        attempt=2,
        instance=1,
        matrix={"x": 4},
        previous_details={"checkpoint": {"at": 7}},
    )
    result = await _run({"function": f"{MOD}:async_with_ctx"}, ctx)
    assert result == {"resume": {"at": 7}, "instance": 1, "matrix": {"x": 4}}


async def test_ctx_is_not_passed_to_a_function_without_it(ctx: StageContext) -> None:
    assert await _run({"function": f"{MOD}:takes_nothing"}, ctx) == {"ok": True}
    # **kwargs does not declare ctx, so it does not receive it.
    assert await _run({"function": f"{MOD}:takes_kwargs", "a": 1, "b": 2}, ctx) == {
        "keys": ["a", "b"]
    }


async def test_none_result_is_returned_as_is(ctx: StageContext) -> None:
    funcs.CALLS.clear()
    assert await _run({"function": f"{MOD}:returns_none", "k": [1, 2]}, ctx) is None
    assert funcs.CALLS == [{"k": [1, 2]}]


async def test_attribute_paths(ctx: StageContext) -> None:
    assert await _run({"function": f"{MOD}:Holder.method", "v": "ab"}, ctx) == {"upper": "AB"}
    assert await _run({"function": f"{MOD}:Holder.Inner.deep"}, ctx) == {"where": "inner"}


async def test_stdlib_functions_can_be_called(ctx: StageContext) -> None:
    assert await _run({"function": "os.path:basename", "p": "/x/y.txt"}, ctx) == "y.txt"


# --- errors ------------------------------------------------------------------------------------


async def test_missing_module_is_a_clear_non_retryable_error(ctx: StageContext) -> None:
    with pytest.raises(FunctionNotFound) as info:
        await _run({"function": "no_such_module_xyz.sub:f"}, ctx)
    message = str(info.value)
    assert "cannot import 'no_such_module_xyz.sub'" in message
    assert "no_such_module_xyz.sub:f" in message
    assert "--path" in message
    assert info.value.non_retryable is True
    assert isinstance(info.value, StageError)


async def test_missing_attribute_is_a_clear_non_retryable_error(ctx: StageContext) -> None:
    with pytest.raises(FunctionNotFound) as info:
        await _run({"function": f"{MOD}:nope"}, ctx)
    assert f"'{MOD}' has no attribute 'nope'" in str(info.value)
    assert info.value.non_retryable is True


async def test_missing_nested_attribute(ctx: StageContext) -> None:
    with pytest.raises(FunctionNotFound, match=r"has no attribute 'Holder\.missing'"):
        await _run({"function": f"{MOD}:Holder.missing"}, ctx)


async def test_not_callable(ctx: StageContext) -> None:
    with pytest.raises(FunctionNotFound) as info:
        await _run({"function": f"{MOD}:NOT_CALLABLE"}, ctx)
    assert "is a int, not a callable" in str(info.value)
    assert info.value.non_retryable is True


async def test_unexpected_kwarg(ctx: StageContext) -> None:
    with pytest.raises(FunctionNotFound) as info:
        await _run({"function": f"{MOD}:add", "a": 1, "c": 3}, ctx)
    message = str(info.value)
    assert message.startswith(f"{MOD}:add:")
    assert "'c'" in message
    assert info.value.non_retryable is True


async def test_missing_kwarg(ctx: StageContext) -> None:
    with pytest.raises(FunctionNotFound) as info:
        await _run({"function": f"{MOD}:add", "b": 3}, ctx)
    assert "missing a required argument: 'a'" in str(info.value)


async def test_wrong_kwargs_do_not_call_the_function(ctx: StageContext) -> None:
    funcs.CALLS.clear()
    with pytest.raises(FunctionNotFound):
        await _run({"function": f"{MOD}:record_a", "b": 1}, ctx)
    assert funcs.CALLS == []
    assert await _run({"function": f"{MOD}:record_a", "a": 1}, ctx) == {"a": 1}
    assert funcs.CALLS == [{"a": 1}]


async def test_errors_raised_by_the_function_propagate_unchanged(ctx: StageContext) -> None:
    with pytest.raises(ValueError, match="bad input"):
        await _run({"function": f"{MOD}:raises_value_error", "message": "bad input"}, ctx)
    # A TypeError from the user's code is not mistaken for a signature mismatch.
    with pytest.raises(TypeError, match="user's own code") as info:
        await _run({"function": f"{MOD}:raises_type_error"}, ctx)
    assert not isinstance(info.value, FunctionNotFound)
    with pytest.raises(RuntimeError, match="async boom"):
        await _run({"function": f"{MOD}:async_raises"}, ctx)


@pytest.mark.parametrize("function", ["nocolon", "a:", ":f", "1mod:f", "mod:f-g", "a b:c"])
async def test_malformed_function_fails_validation(ctx: StageContext, function: str) -> None:
    with pytest.raises(ValidationError):
        await _run({"function": function}, ctx)


async def test_missing_function_fails_validation(ctx: StageContext) -> None:
    with pytest.raises(ValidationError):
        await _run({"x": 1}, ctx)


def test_import_callable() -> None:
    assert import_callable(f"{MOD}:add") is funcs.add
    assert import_callable(f"{MOD}:Holder.method") is funcs.Holder.method
    with pytest.raises(FunctionNotFound):
        import_callable(f"{MOD}:CALLS")


# --- check_params ------------------------------------------------------------------------------


def test_python_check_params() -> None:
    assert PythonExecutor.check_params({"function": "m:f"}) == []
    assert PythonExecutor.check_params({"function": "m:f", "any": 1, "other": [2]}) == []
    assert PythonExecutor.check_params({"function": "${params.fn}"}) == []
    ((loc, message),) = PythonExecutor.check_params({"function": "nocolon"})
    assert loc == ("function",)
    assert "pattern" in message
    ((loc, message),) = PythonExecutor.check_params({"x": 1})
    assert loc == ("function",)
    assert "required" in message.lower()
    ((loc, _),) = PythonExecutor.check_params({"function": 5})
    assert loc == ("function",)


class _CountParams(ExecutorParams):
    n: int
    label: str = "x"


class _CountExecutor(Executor):
    name = "count"
    Params = _CountParams

    async def run(self, params: _CountParams, ctx: StageContext) -> dict[str, Any]:
        return {"n": params.n, "label": params.label}


def test_base_check_params_ignores_type_errors_of_templated_values() -> None:
    assert _CountExecutor.check_params({"n": "${params.n}"}) == []
    assert _CountExecutor.check_params({"n": "count ${params.n}", "label": "${run.id}"}) == []


def test_base_check_params_reports_literal_type_errors() -> None:
    ((loc, message),) = _CountExecutor.check_params({"n": "many"})
    assert loc == ("n",)
    assert "integer" in message
    # Only the templated key is excused; the literal one is still reported.
    problems = _CountExecutor.check_params({"n": "${params.n}", "label": 5})
    assert [loc for loc, _ in problems] == [("label",)]


def test_base_check_params_reports_unknown_keys_even_when_templated() -> None:
    problems = _CountExecutor.check_params({"n": 1, "nn": "${params.n}", "zz": 2})
    assert sorted(loc for loc, _ in problems) == [("nn",), ("zz",)]
    assert all("Extra inputs" in message for _, message in problems)


def test_base_check_params_reports_missing_keys() -> None:
    ((loc, message),) = _CountExecutor.check_params({"label": "${params.l}"})
    assert loc == ("n",)
    assert "required" in message.lower()


def test_base_check_params_escaped_template_is_a_literal() -> None:
    # "$${x}" is not a template, so it is checked (and fails) like any literal.
    ((loc, _),) = _CountExecutor.check_params({"n": "$${x}"})
    assert loc == ("n",)


async def test_base_execute_validates_then_runs(ctx: StageContext) -> None:
    assert await _CountExecutor().execute({"n": 3}, ctx) == {"n": 3, "label": "x"}
    with pytest.raises(ValidationError):
        await _CountExecutor().execute({"n": "${params.n}"}, ctx)
    with pytest.raises(ValidationError):
        await _CountExecutor().execute({"n": 1, "extra": 2}, ctx)
