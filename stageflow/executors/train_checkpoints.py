"""The stage side of ``train``'s checkpoint contract, shared by the torch loop and FuxiCTR.

A training loop (a thread, or DDP ranks in processes) writes ``<root>/epoch_<e>/`` after every
epoch and reports it as an ``("epoch", record)`` event. ``drive`` turns that into an artifact
(``ctx.publish``), pushes it to the data server when there is one (so a retry on another
machine can fetch it even if this one is gone), and records
``{"epoch", "checkpoint": ref, "history"}`` with ``ctx.checkpoint``: all while the loop goes on
with the next epoch. ``resume`` brings the last recorded checkpoint back on whichever worker
runs the retry.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stageflow.errors import StageError, TransferError
from stageflow.transfer.store import ContentStore
from stageflow.worker.context import StageContext

__all__ = [
    "DriveResult",
    "ProcessRunner",
    "Resumed",
    "Runner",
    "ThreadRunner",
    "TrainingFailed",
    "drive",
    "resume",
]


class TrainingFailed(StageError):
    """The training loop raised; the message ends with its traceback."""


class Runner(Protocol):
    events: Any

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


class ThreadRunner:
    """The loop in a thread of this process (one device, or the CPU)."""

    def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=target, args=(*args, self.events, self._stop), daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class ProcessRunner:
    """``world`` spawned processes, one per rank, that report through a shared queue."""

    def __init__(self, target: Any, world: int, args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self.events = context.Queue()
        self._stop = context.Event()
        self._processes = [
            context.Process(
                target=_rank_main,
                args=(target, os.getpid(), rank, world, *args, self.events, self._stop),
                daemon=True,
            )
            for rank in range(world)
        ]
        for process in self._processes:
            process.start()

    def alive(self) -> bool:
        codes = [p.exitcode for p in self._processes]
        return not any(code not in (None, 0) for code in codes) and None in codes

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 10
        for process in self._processes:
            process.join(timeout=max(deadline - time.monotonic(), 0.1))
        for process in self._processes:
            if process.is_alive():
                process.kill()
                process.join()


def _rank_main(target: Any, parent: int, *args: Any) -> None:
    """A rank dies with its worker: a SIGKILLed worker must not leave ranks holding GPUs."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    target(*args)


@dataclass
class Resumed:
    epoch: int
    ref: dict[str, Any]
    history: list[dict[str, Any]]
    directory: Path


async def resume(ctx: StageContext, root: Path) -> Resumed | None:
    """The last recorded checkpoint, fetched and materialized under ``root``; None if none.

    A checkpoint that can no longer be fetched (its worker is gone and it never reached the
    data server) is logged and training starts over: slower, never wrong.
    """
    state = ctx.resume_state()
    if not isinstance(state, dict) or not isinstance(state.get("checkpoint"), dict):
        return None
    ref, epoch = state["checkpoint"], int(state["epoch"])
    plane = ctx.data_plane
    try:
        await plane.fetch(ref)
    except TransferError as exc:
        ctx.logger.warning("checkpoint of epoch %d is unreachable (%s): starting over", epoch, exc)
        return None
    directory = root / f"resume_{epoch}_{ref['sha256'][:12]}"
    if not directory.exists():
        await asyncio.to_thread(plane.store.materialize, ref["sha256"], "dir", directory)
    ctx.logger.info("resuming after epoch %d from checkpoint %s", epoch, ref["sha256"][:12])
    return Resumed(epoch, ref, list(state.get("history") or []), directory)


@dataclass
class DriveResult:
    history: list[dict[str, Any]]
    last_ref: dict[str, Any] | None
    publish_seconds: float = 0.0
    epochs_run: list[int] = field(default_factory=list)


async def drive(
    ctx: StageContext,
    runner: Runner,
    *,
    root: Path,
    history: list[dict[str, Any]],
    last_ref: dict[str, Any] | None,
    checkpoints: bool = True,
) -> DriveResult:
    """Relay ``runner``'s events until it is done: progress, logs, checkpoints."""
    result = DriveResult(list(history), last_ref)
    try:
        while True:
            try:
                kind, value, *rest = await asyncio.to_thread(runner.events.get, True, 0.5)
            except queue.Empty:
                if not runner.alive():
                    raise TrainingFailed(
                        "the training process exited without finishing (killed, or out of "
                        "memory?); the stage resumes from its last epoch when retried"
                    ) from None
                continue
            if kind == "progress":
                ctx.progress(value, rest[0] if rest else None, "batches")
            elif kind == "epoch":
                await _record_epoch(ctx, value, root, result, checkpoints)
            elif kind == "done":
                return result
            elif kind == "error":
                raise TrainingFailed(f"training failed:\n{value[-4000:]}")
    finally:
        await asyncio.to_thread(runner.stop)


async def _record_epoch(
    ctx: StageContext, record: dict[str, Any], root: Path, result: DriveResult, checkpoints: bool
) -> None:
    epoch = int(record["epoch"])
    result.history.append(record)
    result.epochs_run.append(epoch)
    metrics = ", ".join(
        f"{key} {record[key]:.4f}"
        for key in ("loss", "val_loss", "auc")
        if isinstance(record.get(key), float)
    )
    ctx.logger.info("epoch %d: %s (%.2f s)", epoch, metrics, record.get("seconds", 0.0))
    if not checkpoints:
        return
    started = time.perf_counter()
    ref = await ctx.publish(root / f"epoch_{epoch}", f"checkpoint-epoch-{epoch}")
    if ctx.server_url:
        ref = await ctx.data_plane.push(ref, ctx.server_url, keep_local=True)
    result.publish_seconds += time.perf_counter() - started
    ctx.checkpoint({"epoch": epoch, "checkpoint": ref, "history": result.history})
    previous = root / f"epoch_{epoch - 1}"
    if previous.exists():  # the store keeps its objects; the work copy is no longer needed
        await asyncio.to_thread(shutil.rmtree, previous, True)
    if result.last_ref is not None:  # superseded: only the latest checkpoint is ever resumed
        await asyncio.to_thread(_drop, ctx.data_plane.store, result.last_ref, ref)
    result.last_ref = ref


def _drop(store: ContentStore, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Remove ``old``'s objects from this worker's store, keeping those ``new`` shares."""

    def objects(ref: dict[str, Any]) -> set[str]:
        if not store.has(ref["sha256"]):
            return set()
        entries = store.dir_manifest(ref["sha256"]).entries
        return {ref["sha256"], *(entry.sha256 for entry in entries)}

    for sha in objects(old) - objects(new):
        store.remove(sha)
