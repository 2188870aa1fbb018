"""What an ``llm`` stage has already paid for: answered prompts, kept as checkpointed parts.

Every ``checkpoint_every`` answers the buffered rows are written as one ``part_N.parquet``,
published into the worker's store (and pushed to the data server when there is one, so the part
outlives this worker), and the checkpoint records the part's ref, which prompt indices it
holds (as ``[first, last]`` ranges) and their token usage. A failing attempt flushes what it
has before it raises. A retry, on this worker or another, fetches the recorded parts and asks
only for the prompts they do not hold; a part that can no longer be fetched is dropped and its
prompts asked again (paid twice, but never lost).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from stageflow.executors.llm_call import Completion
from stageflow.executors.parquet_io import part_name, write_parts
from stageflow.worker.context import StageContext

__all__ = ["Ledger"]


def _schema(id_type: pa.DataType) -> pa.Schema:
    """The columns of ``responses``; ``id`` is the input's id column or the row number."""
    return pa.schema(
        [
            ("id", id_type),
            ("prompt", pa.string()),
            ("response", pa.string()),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
        ]
    )


def to_ranges(indices: list[int]) -> list[list[int]]:
    """``[0, 1, 2, 5]`` → ``[[0, 2], [5, 5]]``: answered prompts, compactly."""
    ranges: list[list[int]] = []
    for i in sorted(indices):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


def from_ranges(ranges: list[list[int]]) -> set[int]:
    return {i for first, last in ranges for i in range(first, last + 1)}


class Ledger:
    """The parts of one stage instance and the checkpoint that lists them."""

    def __init__(self, directory: Path, ctx: StageContext) -> None:
        self.directory = directory
        self.ctx = ctx
        self.parts: list[dict[str, Any]] = []
        self.requests = 0
        self.retries = 0
        """Requests and retries of earlier attempts (as far as they were checkpointed)."""
        self._lock = asyncio.Lock()

    async def restore(self) -> set[int]:
        """Bring back the parts an earlier attempt checkpointed; returns the answered indices."""
        await asyncio.to_thread(shutil.rmtree, self.directory, True)
        self.directory.mkdir(parents=True, exist_ok=True)
        state = self.ctx.resume_state()
        if not isinstance(state, dict):
            return set()
        self.requests = int(state.get("requests", 0))
        self.retries = int(state.get("retries", 0))
        done: set[int] = set()
        for part in state.get("parts", []):
            ref = part["ref"]
            try:
                await self.ctx.data_plane.fetch(ref)
            except Exception as exc:  # any failure means the same thing: ask those prompts again
                self.ctx.logger.warning("checkpointed part %s is lost (%s)", ref["name"], exc)
                continue
            dest = self.directory / part_name(len(self.parts))
            await asyncio.to_thread(
                self.ctx.data_plane.store.materialize, ref["sha256"], "file", dest
            )
            self.parts.append(part)
            done |= from_ranges(part["ranges"])
        self.ctx.logger.info("resuming: %d prompts already answered", len(done))
        return done

    @property
    def rows(self) -> int:
        return sum(int(part["rows"]) for part in self.parts)

    def usage(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) of every kept answer."""
        return (
            sum(int(part["usage"][0]) for part in self.parts),
            sum(int(part["usage"][1]) for part in self.parts),
        )

    async def flush(self, batch: list[Completion], requests: int, retries: int) -> None:
        """Write ``batch`` as the next part, keep it safe, and checkpoint (``requests`` and
        ``retries`` are this attempt's totals so far)."""
        async with self._lock:
            if batch:
                await self._add_part(batch)
            self.ctx.checkpoint(
                {
                    "parts": self.parts,
                    "requests": self.requests + requests,
                    "retries": self.retries + retries,
                }
            )

    async def _add_part(self, batch: list[Completion]) -> None:
        batch = sorted(batch, key=lambda c: c.prompt.index)
        table = pa.table(
            {
                "id": [c.prompt.id for c in batch],
                "prompt": pa.array([c.prompt.text for c in batch], pa.string()),
                "response": pa.array([c.response for c in batch], pa.string()),
                "finish_reason": pa.array([c.finish_reason for c in batch], pa.string()),
                "prompt_tokens": pa.array([c.prompt_tokens for c in batch], pa.int64()),
                "completion_tokens": pa.array([c.completion_tokens for c in batch], pa.int64()),
            }
        )
        start = len(self.parts)
        files, _ = await asyncio.to_thread(
            write_parts, [table], self.directory, start=start, rows_per_file=len(batch)
        )
        ref = await self.ctx.publish(files[0])
        if self.ctx.server_url:
            ref = await self.ctx.data_plane.push(ref, self.ctx.server_url, keep_local=True)
        self.parts.append(
            {
                "ref": ref,
                "rows": len(batch),
                "ranges": to_ranges([c.prompt.index for c in batch]),
                "usage": [
                    sum(c.prompt_tokens for c in batch),
                    sum(c.completion_tokens for c in batch),
                ],
            }
        )

    async def finish(self, empty_id_type: pa.DataType) -> dict[str, Any]:
        """Publish the directory of every part as the stage's ``responses`` artifact."""
        if not self.parts:
            schema = _schema(empty_id_type)
            await asyncio.to_thread(write_parts, [], self.directory, schema=schema)
        return await self.ctx.publish(self.directory, "responses")
