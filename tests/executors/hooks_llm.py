"""Stage functions the ``llm`` tests run with ``uses: python`` (importable from this directory)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stageflow.worker.context import StageContext


def questions(n: int, ctx: StageContext) -> dict[str, Any]:
    """A parquet table of ``n`` rows: ``key`` (str), ``topic`` and ``detail`` columns."""
    table = pa.table(
        {
            "key": [f"k{i:03d}" for i in range(n)],
            "topic": [f"topic {i}" for i in range(n)],
            "detail": [f"detail number {i}" for i in range(n)],
        }
    )
    path = ctx.output_dir() / "questions.parquet"
    pq.write_table(table, path)
    return {"table": ctx.artifact(path)}
