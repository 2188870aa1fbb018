"""``uses: shell``: run a command; its outputs are ``exit_code`` and a trailing JSON object.

A string command runs through ``/bin/sh -c``; a list runs as is. Each output line is logged as it
comes. If the last line of stdout is a JSON object, its keys join the outputs. A non-zero exit
fails the stage (retryable) with the last lines of output in the message. Cancelling the stage
terminates the command's whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import deque
from typing import Any

from pydantic import Field

from stageflow._process import die_with_parent
from stageflow.errors import ShellCommandFailed
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.worker.context import StageContext

__all__ = ["ShellExecutor"]


class ShellParams(ExecutorParams):
    command: str | list[str] = Field(description="A shell string, or an argv list.")
    env: dict[str, str] = Field(default_factory=dict, description="Added to the environment.")
    cwd: str | None = Field(None, description="Working directory (default: the worker's).")


class ShellExecutor(Executor):
    name = "shell"
    Params = ShellParams

    async def run(self, params: ShellParams, ctx: StageContext) -> dict[str, Any]:
        env = {
            **os.environ,
            "STAGEFLOW_RUN_ID": ctx.run_id,
            "STAGEFLOW_STAGE": ctx.stage,
            "STAGEFLOW_ATTEMPT": str(ctx.attempt),
            **params.env,
        }
        if isinstance(params.command, str):
            argv = ["/bin/sh", "-c", params.command]
        else:
            argv = [str(part) for part in params.command]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=params.cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        tail: deque[str] = deque(maxlen=20)
        last_stdout: list[str] = [""]

        async def pump(stream: asyncio.StreamReader, is_stdout: bool) -> None:
            async for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                tail.append(line)
                if is_stdout and line.strip():
                    last_stdout[0] = line
                ctx.logger.info(line) if is_stdout else ctx.logger.warning(line)

        assert process.stdout is not None and process.stderr is not None
        try:
            await asyncio.gather(pump(process.stdout, True), pump(process.stderr, False))
            exit_code = await process.wait()
        except asyncio.CancelledError:
            await _stop(process)
            raise
        if exit_code != 0:
            raise ShellCommandFailed(exit_code, "\n".join(tail))
        outputs: dict[str, Any] = {"exit_code": exit_code}
        with contextlib.suppress(ValueError):
            parsed = json.loads(last_stdout[0])
            if isinstance(parsed, dict):
                outputs.update(parsed)
        return outputs


async def _stop(process: asyncio.subprocess.Process, grace_s: float = 5.0) -> None:
    """SIGTERM the command's process group, then SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
            return
        except TimeoutError:
            continue
