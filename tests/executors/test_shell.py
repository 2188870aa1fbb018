"""Tests for the ``shell`` executor, run directly (no Temporal) with a real StageContext."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from stageflow.errors import ShellCommandFailed, StageError
from stageflow.executors import shell as shell_module
from stageflow.executors.registry import get_executor
from stageflow.executors.shell import ShellExecutor
from stageflow.worker.context import StageContext

PY = sys.executable


@pytest.fixture
def ctx() -> StageContext:
    return StageContext(run_id="run-7", pipeline="pipe", stage="step", attempt=3)


async def _run(with_: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    return await ShellExecutor().execute(with_, ctx)


def _py(code: str) -> list[str]:
    """An argv list that runs ``code`` with this interpreter."""
    return [PY, "-c", code]


def test_registry_knows_the_shell_executor() -> None:
    assert get_executor("shell") is ShellExecutor
    assert ShellExecutor.name == "shell"


# --- commands and outputs ----------------------------------------------------------------------


async def test_string_command_runs_through_sh(ctx: StageContext) -> None:
    result = await _run({"command": 'X=5; Y=$((X * 2)); echo "{\\"y\\": $Y}"'}, ctx)
    assert result == {"exit_code": 0, "y": 10}


async def test_string_command_with_pipes(ctx: StageContext) -> None:
    command = "printf 'abc\\n' | tr a-z A-Z | sed 's/.*/{\"up\": \"&\"}/'"
    assert await _run({"command": command}, ctx) == {"exit_code": 0, "up": "ABC"}


async def test_list_command_runs_without_a_shell(ctx: StageContext) -> None:
    argv = _py("import json, sys; print(json.dumps({'argv': sys.argv[1:]}))")
    result = await _run({"command": [*argv, "a b", "$HOME", "*", "x;y"]}, ctx)
    assert result == {"exit_code": 0, "argv": ["a b", "$HOME", "*", "x;y"]}


async def test_plain_output_gives_only_the_exit_code(ctx: StageContext) -> None:
    assert await _run({"command": "echo hello; echo world"}, ctx) == {"exit_code": 0}
    assert await _run({"command": "true"}, ctx) == {"exit_code": 0}


async def test_last_line_json_object_becomes_outputs(ctx: StageContext) -> None:
    command = 'echo starting; echo "{\\"n\\": 3, \\"s\\": \\"x\\", \\"l\\": [1, 2], \\"o\\": {}}"'
    result = await _run({"command": command}, ctx)
    assert result == {"exit_code": 0, "n": 3, "s": "x", "l": [1, 2], "o": {}}


async def test_trailing_blank_lines_are_skipped(ctx: StageContext) -> None:
    command = "echo '{\"a\": 1}'; echo; echo '   '; printf '\\n\\n'"
    assert await _run({"command": command}, ctx) == {"exit_code": 0, "a": 1}


async def test_last_line_without_newline(ctx: StageContext) -> None:
    assert await _run({"command": "printf '{\"a\": 2}'"}, ctx) == {"exit_code": 0, "a": 2}


@pytest.mark.parametrize(
    "command",
    [
        "echo '{\"a\": 1}'; echo done",  # JSON, but not on the last line
        "echo '[1, 2]'",  # JSON, but not an object
        "echo '3'",
        "echo '\"text\"'",
        "echo '{not json'",
        "echo '{\"a\": 1}' >&2",  # stderr does not count
    ],
)
async def test_other_last_lines_are_not_outputs(ctx: StageContext, command: str) -> None:
    assert await _run({"command": command}, ctx) == {"exit_code": 0}


async def test_stderr_after_the_json_line_does_not_matter(ctx: StageContext) -> None:
    command = "echo '{\"a\": 1}'; sleep 0.1; echo 'err' >&2"
    assert await _run({"command": command}, ctx) == {"exit_code": 0, "a": 1}


async def test_env_is_added_to_the_workers_environment(
    ctx: StageContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SF_TEST_INHERITED", "from-worker")
    keys = ["FOO", "SF_TEST_INHERITED", "STAGEFLOW_RUN_ID", "STAGEFLOW_STAGE", "STAGEFLOW_ATTEMPT"]
    code = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {keys!r}}}))"
    result = await _run({"command": _py(code), "env": {"FOO": "bar baz"}}, ctx)
    assert result == {
        "exit_code": 0,
        "FOO": "bar baz",
        "SF_TEST_INHERITED": "from-worker",
        "STAGEFLOW_RUN_ID": "run-7",
        "STAGEFLOW_STAGE": "step",
        "STAGEFLOW_ATTEMPT": "3",
    }


async def test_env_in_a_shell_string(ctx: StageContext) -> None:
    result = await _run({"command": 'echo "{\\"v\\": \\"$V\\"}"', "env": {"V": "ok"}}, ctx)
    assert result["v"] == "ok"


async def test_env_overrides_the_workers_environment(
    ctx: StageContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SF_TEST_VALUE", "worker")
    result = await _run(
        {"command": 'echo "{\\"v\\": \\"$SF_TEST_VALUE\\"}"', "env": {"SF_TEST_VALUE": "stage"}},
        ctx,
    )
    assert result["v"] == "stage"


async def test_cwd(ctx: StageContext, tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here")
    code = "import json, os; print(json.dumps({'cwd': os.getcwd(), 'ls': os.listdir()}))"
    result = await _run({"command": _py(code), "cwd": str(tmp_path)}, ctx)
    assert os.path.realpath(result["cwd"]) == os.path.realpath(tmp_path)
    assert result["ls"] == ["marker.txt"]


async def test_cwd_for_a_shell_string(ctx: StageContext, tmp_path: Path) -> None:
    await _run({"command": "echo made > out.txt", "cwd": str(tmp_path)}, ctx)
    assert (tmp_path / "out.txt").read_text() == "made\n"


async def test_default_cwd_is_the_workers(ctx: StageContext) -> None:
    result = await _run(
        {"command": _py("import json, os; print(json.dumps({'c': os.getcwd()}))")}, ctx
    )
    assert os.path.realpath(result["c"]) == os.path.realpath(os.getcwd())


async def test_output_is_logged_line_by_line(
    ctx: StageContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stageflow.stage.step")
    await _run({"command": "echo out-1; echo err-1 >&2; echo out-2"}, ctx)
    records = [r for r in caplog.records if r.name == "stageflow.stage.step"]
    assert [(r.levelno, r.getMessage()) for r in records if r.levelno == logging.INFO] == [
        (logging.INFO, "out-1"),
        (logging.INFO, "out-2"),
    ]
    assert [r.getMessage() for r in records if r.levelno == logging.WARNING] == ["err-1"]


async def test_large_output_on_both_streams_does_not_deadlock(ctx: StageContext) -> None:
    code = (
        "import sys\n"
        "for i in range(20000):\n"
        "    sys.stdout.write(f'out {i:06d} ' + 'x' * 40 + '\\n')\n"
        "    sys.stderr.write(f'err {i:06d} ' + 'y' * 40 + '\\n')\n"
        "print('{\"done\": true}')\n"
    )
    result = await asyncio.wait_for(_run({"command": _py(code)}, ctx), 60)
    assert result == {"exit_code": 0, "done": True}


async def test_a_line_longer_than_64k_is_read(ctx: StageContext) -> None:
    code = "print('x' * 100_000); print('{\"a\": 1}')"
    result = await asyncio.wait_for(_run({"command": _py(code)}, ctx), 30)
    assert result == {"exit_code": 0, "a": 1}


async def test_a_json_last_line_longer_than_64k_becomes_outputs(ctx: StageContext) -> None:
    code = "import json; print('start'); print(json.dumps({'big': 'y' * 200_000}))"
    result = await asyncio.wait_for(_run({"command": _py(code)}, ctx), 30)
    assert result == {"exit_code": 0, "big": "y" * 200_000}


async def test_lines_split_across_reads_are_joined(
    ctx: StageContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "_READ_BYTES", 3)
    caplog.set_level(logging.INFO, logger="stageflow.stage.step")
    result = await _run({"command": "printf 'abcdefg\\n\\nhi\\n{\"k\": 12345}'"}, ctx)
    assert result == {"exit_code": 0, "k": 12345}
    messages = [r.getMessage() for r in caplog.records if r.name == "stageflow.stage.step"]
    assert messages == ["abcdefg", "", "hi", '{"k": 12345}']


async def test_a_line_longer_than_the_cap_is_logged_in_pieces(
    ctx: StageContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "MAX_LINE_BYTES", 1000)
    caplog.set_level(logging.INFO, logger="stageflow.stage.step")
    code = "import sys; sys.stdout.write('z' * 2500 + '\\nend\\n')"
    assert await _run({"command": _py(code)}, ctx) == {"exit_code": 0}
    messages = [r.getMessage() for r in caplog.records if r.name == "stageflow.stage.step"]
    assert messages == ["z" * 1000, "z" * 1000, "z" * 500, "end"]


# --- failures ----------------------------------------------------------------------------------


async def test_non_zero_exit_raises_with_the_output_tail(ctx: StageContext) -> None:
    with pytest.raises(ShellCommandFailed) as info:
        await _run({"command": "echo out-line; echo err-line >&2; exit 3"}, ctx)
    error = info.value
    assert error.exit_code == 3
    message = str(error)
    assert message.startswith("command exited with status 3; last output:\n")
    assert "out-line" in message
    assert "err-line" in message
    assert isinstance(error, StageError)
    assert error.non_retryable is False  # a failed command may succeed when retried


async def test_tail_holds_only_the_last_lines(ctx: StageContext) -> None:
    command = "for i in $(seq -w 1 30); do echo line-$i; done; exit 1"
    with pytest.raises(ShellCommandFailed) as info:
        await _run({"command": command}, ctx)
    tail = str(info.value).split("last output:\n", 1)[1].splitlines()
    assert tail == [f"line-{i:02d}" for i in range(11, 31)]


async def test_failure_without_output(ctx: StageContext) -> None:
    with pytest.raises(ShellCommandFailed) as info:
        await _run({"command": "exit 2"}, ctx)
    assert str(info.value) == "command exited with status 2"
    assert info.value.exit_code == 2


async def test_json_last_line_does_not_hide_a_failure(ctx: StageContext) -> None:
    with pytest.raises(ShellCommandFailed) as info:
        await _run({"command": "echo '{\"a\": 1}'; exit 4"}, ctx)
    assert info.value.exit_code == 4


async def test_killed_by_a_signal(ctx: StageContext) -> None:
    with pytest.raises(ShellCommandFailed) as info:
        await _run({"command": "kill -9 $$"}, ctx)
    assert info.value.exit_code == -signal.SIGKILL


async def test_list_command_exit_code(ctx: StageContext) -> None:
    with pytest.raises(ShellCommandFailed) as info:
        await _run({"command": _py("import sys; print('bye'); sys.exit(7)")}, ctx)
    assert info.value.exit_code == 7
    assert "bye" in str(info.value)


@pytest.mark.parametrize(
    "with_",
    [{}, {"command": 5}, {"command": "x", "env": {"A": 1}}, {"command": "x", "other": 1}],
)
async def test_invalid_params(ctx: StageContext, with_: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await _run(with_, ctx)


# --- cancellation ------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _wait_until_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        await asyncio.sleep(0.05)
    return _gone(pid)


async def _read_pid(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        await asyncio.sleep(0.02)
    raise AssertionError(f"the command never wrote {path}")


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids the test started; whatever is left of them is killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> float:
    """Make the SIGTERM -> SIGKILL grace period short so escalation tests run fast."""
    grace = 0.5
    monkeypatch.setattr(shell_module, "_stop", functools.partial(shell_module._stop, grace_s=grace))
    return grace


def _pid_writing(command: str, pidfile: Path) -> str:
    """``command`` started in the background, its pid written atomically to ``pidfile``."""
    return f"{command} & echo $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; wait"


def _term_proof(pidfile: Path, redirect: str = "") -> str:
    """A child that ignores SIGTERM, writing its pid only once the trap is set (a SIGTERM that
    came before the trap would kill it at once and end the test's race early)."""
    inner = f"trap '' TERM; echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; exec sleep 30"
    return f"sh -c {_quote(inner)} {redirect} & wait"


async def _start_and_cancel(
    with_: dict[str, Any], ctx: StageContext, pidfile: Path, spawned: list[int]
) -> tuple[int, float]:
    task = asyncio.create_task(_run(with_, ctx))
    pid = await _read_pid(pidfile)
    spawned.append(pid)
    assert not _gone(pid)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return pid, time.monotonic() - started


async def test_cancel_kills_the_whole_process_group(
    ctx: StageContext, tmp_path: Path, spawned: list[int]
) -> None:
    pidfile, leader_file = tmp_path / "child.pid", tmp_path / "leader.pid"
    command = f"echo $$ > {leader_file}; " + _pid_writing("sleep 30", pidfile)
    child, elapsed = await _start_and_cancel({"command": command}, ctx, pidfile, spawned)
    leader = int(leader_file.read_text())
    spawned.append(leader)
    assert child != leader
    assert await _wait_until_gone(child), "the shell's child `sleep 30` survived cancellation"
    assert await _wait_until_gone(leader), "the shell survived cancellation"
    assert elapsed < 4.0  # SIGTERM was enough; no wait for the SIGKILL grace period


async def test_cancel_kills_a_list_command_and_its_children(
    ctx: StageContext, tmp_path: Path, spawned: list[int]
) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, pathlib\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        f"pathlib.Path('{pidfile}.tmp').write_text(str(child.pid))\n"
        f"pathlib.Path('{pidfile}.tmp').rename('{pidfile}')\n"
        "child.wait()\n"
    )
    child, _ = await _start_and_cancel({"command": _py(code)}, ctx, pidfile, spawned)
    assert await _wait_until_gone(child)


async def test_cancel_sends_sigterm_first(
    ctx: StageContext, tmp_path: Path, spawned: list[int]
) -> None:
    pidfile, termfile = tmp_path / "child.pid", tmp_path / "term.txt"
    handler = f"trap 'echo got-term > {termfile}; exit 0' TERM; while :; do sleep 0.05; done"
    command = _pid_writing(f"sh -c {_quote(handler)}", pidfile)
    child, _ = await _start_and_cancel({"command": command}, ctx, pidfile, spawned)
    assert await _wait_until_gone(child)
    assert termfile.read_text() == "got-term\n"


async def test_cancel_escalates_to_sigkill_after_the_grace_period(
    ctx: StageContext, tmp_path: Path, spawned: list[int], short_grace: float
) -> None:
    pidfile = tmp_path / "child.pid"
    # The child ignores SIGTERM (and keeps the output pipes open).
    command = _term_proof(pidfile)
    child, elapsed = await _start_and_cancel({"command": command}, ctx, pidfile, spawned)
    assert await _wait_until_gone(child), "a SIGTERM-proof child survived cancellation"
    assert elapsed >= short_grace * 0.8  # it was given the grace period before SIGKILL


async def test_cancel_kills_group_members_that_outlive_the_leader(
    ctx: StageContext, tmp_path: Path, spawned: list[int], short_grace: float
) -> None:
    pidfile = tmp_path / "child.pid"
    command = _term_proof(pidfile, ">/dev/null 2>&1")
    child, _ = await _start_and_cancel({"command": command}, ctx, pidfile, spawned)
    assert await _wait_until_gone(child, timeout=30)


async def test_the_grace_period_is_the_module_setting(
    ctx: StageContext, tmp_path: Path, spawned: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "STOP_GRACE_S", 0.3)
    pidfile = tmp_path / "child.pid"
    command = _term_proof(pidfile, ">/dev/null 2>&1")
    child, elapsed = await _start_and_cancel({"command": command}, ctx, pidfile, spawned)
    assert elapsed >= 0.3 * 0.8  # it waited out the grace period before SIGKILL
    assert await _wait_until_gone(child, timeout=30)


async def test_a_failure_while_reading_output_stops_the_command(
    ctx: StageContext, tmp_path: Path, spawned: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Boom(Exception):
        pass

    class RaisingLogger:
        def info(self, message: str) -> None:
            if message == "boom":
                raise Boom(message)

        warning = info

    monkeypatch.setattr(ctx, "logger", RaisingLogger())
    pidfile = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; echo boom; wait"
    with pytest.raises(Boom):
        await asyncio.wait_for(_run({"command": command}, ctx), 20)
    child = int(pidfile.read_text())
    spawned.append(child)
    assert await _wait_until_gone(child), "the command outlived the failed stage"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# --- check_params ------------------------------------------------------------------------------


def test_check_params_accepts_valid_literals() -> None:
    assert ShellExecutor.check_params({"command": "echo hi"}) == []
    assert (
        ShellExecutor.check_params({"command": ["echo", "hi"], "env": {"A": "b"}, "cwd": "/"}) == []
    )


def test_check_params_ignores_type_errors_of_templated_values() -> None:
    assert ShellExecutor.check_params({"command": "${params.cmd}"}) == []
    assert ShellExecutor.check_params({"command": "x", "env": "${params.env}"}) == []
    assert (
        ShellExecutor.check_params({"command": ["echo", "${params.n}"], "cwd": "${run.id}"}) == []
    )


def test_check_params_reports_unknown_keys_even_when_templated() -> None:
    problems = ShellExecutor.check_params({"command": "x", "comand": "${params.c}"})
    assert [loc for loc, _ in problems] == [("comand",)]
    assert "Extra inputs are not permitted" in problems[0][1]


def test_check_params_reports_missing_and_literal_errors() -> None:
    ((loc, message),) = ShellExecutor.check_params({"env": "${params.env}"})
    assert loc == ("command",)
    assert "required" in message.lower()
    problems = ShellExecutor.check_params({"command": "x", "env": {"A": 1}})
    assert [loc for loc, _ in problems] == [("env", "A")]
    problems = ShellExecutor.check_params({"command": "x", "cwd": 5})
    assert [loc for loc, _ in problems] == [("cwd",)]
