"""Stage functions for the lake pipelines (imported by the python executor)."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stageflow.executors.parquet_io import count_rows, dataset_files
from stageflow.lake.client import fetch_lake_source
from stageflow.worker.context import StageContext

KEYS = ["alpha", "beta", "gamma", "delta"]


def shard_rows(shard: int, rows: int) -> dict[str, list[Any]]:
    """The rows shard ``shard`` produces: the test recomputes them to check the aggregate."""
    rng = random.Random(shard)
    return {
        "key": [rng.choice(KEYS) for _ in range(rows)],
        "value": [rng.uniform(-10, 10) for _ in range(rows)],
        "confidence": [rng.random() for _ in range(rows)],
    }


def produce(ctx: StageContext, shard: int, rows: int) -> dict[str, Any]:
    out = ctx.output_dir() / f"shard_{shard}"
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table(shard_rows(shard, rows))
    half = rows // 2
    pq.write_table(table.slice(0, half), out / "part_0.parquet", compression="zstd")
    pq.write_table(table.slice(half), out / "part_1.parquet", compression="zstd")
    return {"data": ctx.artifact(out)}


async def read_lake(ctx: StageContext, url: str) -> dict[str, Any]:
    path = await fetch_lake_source(ctx, url)
    files = dataset_files(path)
    return {"rows": count_rows(files), "files": len(files)}
