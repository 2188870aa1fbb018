"""Stage functions the engine tests run. Each records what it did in files under ``log_dir``,
so tests observe real executions (order, timing, attempts, workers), not what the engine says.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from stageflow import StageContext


def _append(log_dir: str, name: str, record: dict[str, Any]) -> None:
    with open(Path(log_dir) / f"{name}.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_log(log_dir: Path, name: str) -> list[dict[str, Any]]:
    path = log_dir / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def timed(
    log_dir: str, name: str, seconds: float = 0.0, ctx: StageContext | None = None
) -> dict[str, Any]:
    """Record start and end times around a sleep."""
    start = time.time()
    await asyncio.sleep(seconds)
    end = time.time()
    _append(log_dir, name, {"start": start, "end": end, "worker": ctx.worker if ctx else None})
    return {"start": start, "end": end}


def numbers(count: int) -> dict[str, Any]:
    return {"numbers": list(range(1, count + 1))}


def multiply(x: int, y: int, ctx: StageContext) -> dict[str, Any]:
    return {"value": x * y, "instance": ctx.instance, "worker": ctx.worker}


def total(values: list[int]) -> dict[str, Any]:
    return {"total": sum(values), "values": values}


def flaky(log_dir: str, failures: int, ctx: StageContext) -> dict[str, Any]:
    """Fail with ConnectionError on the first ``failures`` attempts, then succeed."""
    _append(log_dir, "flaky", {"attempt": ctx.attempt})
    if ctx.attempt <= failures:
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


def bad_input(log_dir: str, ctx: StageContext) -> dict[str, Any]:
    _append(log_dir, "bad_input", {"attempt": ctx.attempt})
    raise ValueError("the input is malformed")


def fail_while_flag(log_dir: str, name: str, flag: str, ctx: StageContext) -> dict[str, Any]:
    """Fail as long as the file ``flag`` exists; count every call."""
    _append(log_dir, name, {"attempt": ctx.attempt, "instance": ctx.instance})
    if Path(flag).exists():
        raise RuntimeError(f"{flag} exists")
    return {"ok": True, "instance": ctx.instance}


async def wait_for_cancel(log_dir: str, ctx: StageContext) -> dict[str, Any]:
    """Sleep until cancelled; record that the cancellation arrived."""
    _append(log_dir, "wait_for_cancel", {"started": time.time()})
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        _append(log_dir, "wait_for_cancel", {"cancelled": time.time()})
        raise
    return {}


def counted_steps(log_dir: str, steps: int, delay: float, ctx: StageContext) -> dict[str, Any]:
    """A long stage that checkpoints after every step and resumes from its last checkpoint."""
    state = ctx.resume_state() or {"next": 0}
    resumed_from = state["next"]
    for step in range(resumed_from, steps):
        time.sleep(delay)
        _append(log_dir, "counted", {"step": step, "pid": os.getpid(), "attempt": ctx.attempt})
        ctx.checkpoint({"next": step + 1})
        ctx.progress(step + 1, steps, "steps")
    return {"resumed_from": resumed_from, "pid": os.getpid(), "attempt": ctx.attempt}


def whoami(ctx: StageContext) -> dict[str, Any]:
    return {"worker": ctx.worker, "instance": ctx.instance}


def digest_tree(data: Path, ctx: StageContext) -> dict[str, Any]:
    """What a stage received: each file's sha256 by relative path, and where it was."""
    import hashlib

    tree = {
        str(path.relative_to(data)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data.rglob("*"))
        if path.is_file()
    }
    summary = ctx.output_dir() / "summary.json"
    summary.write_text(json.dumps(tree))
    return {
        "tree": tree,
        "at": str(data),
        "is_path": isinstance(data, Path),
        "summary": ctx.artifact(summary),
    }


def write_blob(size: int, ctx: StageContext) -> dict[str, Any]:
    path = ctx.output_dir() / "blob.bin"
    path.write_bytes(os.urandom(size))
    return {"blob": ctx.artifact(path), "worker": ctx.worker}


def read_blob(blob: Path, seconds: float, ctx: StageContext) -> dict[str, Any]:
    import hashlib

    time.sleep(seconds)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    return {"sha256": digest, "worker": ctx.worker, "at": str(blob)}


def chatty(lines: int, delay: float, ctx: StageContext) -> dict[str, Any]:
    """Print and log lines slowly, so a watcher sees them arrive one by one."""
    for number in range(1, lines + 1):
        print(f"chatty line {number} of {lines}")
        ctx.logger.info("logged line %d", number)
        time.sleep(delay)
    return {"lines": lines}


def echo(**values: Any) -> dict[str, Any]:
    """Return the rendered parameters, to see what templates gave."""
    return values


def logged_blob(log_dir: str, size: int, ctx: StageContext) -> dict[str, Any]:
    """``write_blob`` that counts its calls: a different blob on every call."""
    _append(log_dir, "logged_blob", {"attempt": ctx.attempt})
    return write_blob(size, ctx)


def reject_copy(sha256: str, flag: str) -> dict[str, Any]:
    """Fail, as a fetch of a corrupt copy does, while ``flag`` exists."""
    if Path(flag).exists():
        from stageflow.errors import IntegrityError

        raise IntegrityError(f"object {sha256} arrived wrong 3 times from its only copy")
    return {"ok": True}
