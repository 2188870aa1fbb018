"""Stage functions of tests/hosts/chaos.yaml: long enough that a fault lands mid-stage.

``produce`` publishes a blob (the artifact a peer fetches, slowly, so that a fault lands
mid-transfer) and then writes ``rows`` ids in ``parts`` parquet parts, pausing before each and
checkpointing after each. A retry resumes at the checkpoint; parts of earlier attempts that
this host does not hold (they died with another host) are written again, without the pause.
Every part is a pure function of its index, so any host writes the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stageflow import StageContext

KEYS = 7
MIB = 1024 * 1024


def blob_bytes(run_id: str, blob_mb: int) -> bytes:
    """The run's blob: incompressible, the same on every host (its sha256 is known up front)
    and different per run (a worker's store that holds an earlier run's would not fetch it)."""
    return random.Random(f"chaos-blob-{run_id}-{blob_mb}").randbytes(blob_mb * MIB)


def blob_sha256(run_id: str, blob_mb: int) -> str:
    return hashlib.sha256(blob_bytes(run_id, blob_mb)).hexdigest()


def _write_part(out: Path, index: int, rows: int, parts: int, run_id: str) -> None:
    per = -(-rows // parts)
    ids = list(range(index * per, min(rows, (index + 1) * per)))
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "key": pa.array([f"k{i % KEYS}" for i in ids]),
            "run_id": pa.array([run_id] * len(ids)),
        }
    )
    tmp = out / f".part_{index:04d}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / f"part_{index:04d}.parquet")  # a killed write leaves no part


def _write_blob(path: Path, run_id: str, blob_mb: int) -> None:
    """Always afresh: an earlier attempt's file is a hard link of the store's object, which a
    test may have corrupted."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob_bytes(run_id, blob_mb))
    os.replace(tmp, path)


async def produce(
    rows: int, parts: int, pause: float, blob_mb: int, run_id: str, ctx: StageContext
) -> dict[str, Any]:
    state = ctx.resume_state() or {"done": 0}
    blob = ctx.output_dir() / "blob.bin"
    await asyncio.to_thread(_write_blob, blob, run_id, blob_mb)
    blob_ref = await ctx.publish(blob)
    out = ctx.output_dir() / "rows"
    out.mkdir(exist_ok=True)
    for index in range(parts):
        if (out / f"part_{index:04d}.parquet").exists():
            continue
        if index >= state["done"]:
            await asyncio.sleep(pause)
        await asyncio.to_thread(_write_part, out, index, rows, parts, run_id)
        if index >= state["done"]:
            ctx.checkpoint({"done": index + 1})
        ctx.progress(index + 1, parts, "parts")
    ctx.logger.info("produced %d rows in %d parts (resumed at part %d)", rows, parts,
                    state["done"])  # fmt: skip
    return {"rows": await ctx.publish(out), "blob": blob_ref, "count": rows}


async def pull(rows: Path, blob: Path, blob_sha256: str, ctx: StageContext) -> dict[str, Any]:
    """Its inputs were fetched (and verified) from a peer before this runs; check and pass on."""
    digest = await asyncio.to_thread(lambda: hashlib.sha256(blob.read_bytes()).hexdigest())
    if digest != blob_sha256:
        raise ValueError(f"blob arrived as {digest}, expected {blob_sha256}")
    return {"rows": await ctx.publish(rows, name="rows"), "blob_bytes": blob.stat().st_size}
