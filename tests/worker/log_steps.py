"""Stage functions for the log capture, shipping and drain tests (importable: tests/worker is on
the worker's --path). Each prints and logs numbered lines and records its progress in files."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from stageflow import StageContext


def _record(log_dir: str, name: str, record: dict[str, Any]) -> None:
    with open(Path(log_dir) / f"{name}.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def talk(lines: int, delay: float, ctx: StageContext, log_dir: str | None = None) -> dict[str, Any]:
    """Sync (runs in a thread): print, print to stderr and log each numbered line."""
    me = ctx.name
    for i in range(lines):
        print(f"{me} out {i}")
        print(f"{me} err {i}", file=sys.stderr)
        ctx.logger.info(f"{me} log {i}")
        if log_dir:
            _record(log_dir, "talk", {"i": i, "pid": os.getpid(), "at": time.time()})
        time.sleep(delay)
    return {"pid": os.getpid(), "lines": lines}


async def talk_async(lines: int, delay: float, ctx: StageContext) -> dict[str, Any]:
    """Async (on the event loop): the same lines, interleaved with other stages by awaiting."""
    me = ctx.name
    for i in range(lines):
        print(f"{me} out {i}")
        print(f"{me} err {i}", file=sys.stderr)
        ctx.logger.info(f"{me} log {i}")
        await asyncio.sleep(delay)
    return {"pid": os.getpid(), "lines": lines}
