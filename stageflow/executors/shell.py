"""``uses: shell``: run a command; its outputs are ``exit_code`` and a trailing JSON object.

A string command runs through ``/bin/sh -c``; a list runs as is. Each output line is logged as it
comes. If the last line of stdout is a JSON object, its keys join the outputs. A non-zero exit
fails the stage (retryable) with the last lines of output in the message. Lines of any length
are read (beyond ``MAX_LINE_BYTES`` they are logged in pieces). Cancelling the stage terminates
the command's whole process group: SIGTERM, then SIGKILL for any member still running after
``STOP_GRACE_S``, even when the group's leader has already exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field

from stageflow._process import die_with_parent
from stageflow.errors import ShellCommandFailed
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.worker.context import StageContext

__all__ = ["ShellExecutor"]

STOP_GRACE_S = 5.0
"""Seconds a cancelled command's process group has to exit after SIGTERM before SIGKILL."""
MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longer output lines are logged (and kept for the failure message) in pieces of this size."""
_READ_BYTES = 64 * 1024
_POLL_S = 0.05
_REAP_TIMEOUT_S = 10.0
log = logging.getLogger("stageflow.executors.shell")


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
            async for raw in _lines(stream):
                line = raw.decode(errors="replace").rstrip("\n")
                tail.append(line)
                if is_stdout and line.strip():
                    last_stdout[0] = line
                ctx.logger.info(line) if is_stdout else ctx.logger.warning(line)

        assert process.stdout is not None and process.stderr is not None
        pumps = [
            asyncio.ensure_future(pump(process.stdout, True)),
            asyncio.ensure_future(pump(process.stderr, False)),
        ]
        try:
            await asyncio.gather(*pumps)
            exit_code = await process.wait()
        except BaseException:  # cancelled, or reading failed: leave nothing running
            for task in pumps:
                task.cancel()
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


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The lines of ``stream`` (without their ``\\n``), however long: no 64 KiB line limit.

    A line longer than ``MAX_LINE_BYTES`` comes in pieces of that size, so a command that never
    ends a line (a ``\\r`` progress bar) cannot grow the buffer without bound.
    """
    pending = bytearray()
    while chunk := await stream.read(_READ_BYTES):
        searched = len(pending)  # no newline before this
        pending += chunk
        while True:
            end = pending.find(b"\n", searched)
            if 0 <= end <= MAX_LINE_BYTES:
                yield bytes(pending[:end])
                del pending[: end + 1]
            elif len(pending) >= MAX_LINE_BYTES:
                yield bytes(pending[:MAX_LINE_BYTES])
                del pending[:MAX_LINE_BYTES]
            else:
                break
            searched = 0
    if pending:
        yield bytes(pending)


async def _stop(process: asyncio.subprocess.Process, grace_s: float | None = None) -> None:
    """SIGTERM the command's process group, then SIGKILL what is left after the grace period.

    The whole group is waited for, not only its leader: a child that ignores SIGTERM is killed
    even when the shell that started it has already exited. ``grace_s`` defaults to
    ``STOP_GRACE_S``.
    """
    grace = STOP_GRACE_S if grace_s is None else grace_s
    group = process.pid  # started with start_new_session: the leader's pid is the group id
    loop = asyncio.get_running_loop()
    try:
        _signal_group(group, signal.SIGTERM)
        deadline = loop.time() + grace
        while _group_alive(group) and loop.time() < deadline:
            await asyncio.sleep(min(_POLL_S, max(deadline - loop.time(), 0)))
    finally:
        if _group_alive(group):
            _signal_group(group, signal.SIGKILL)
    # The group is gone; reaping the leader must not hold up the stage's cancellation forever
    # should the exit notification be lost (seen once in CI under load).
    try:
        await asyncio.wait_for(process.wait(), _REAP_TIMEOUT_S)
    except TimeoutError:
        log.warning("command %d was killed but its exit was not reported", process.pid)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    """Whether a process of ``group`` still runs (zombies, waiting to be reaped, do not)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: the group exists, so count it as running
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
            return True
    return False
