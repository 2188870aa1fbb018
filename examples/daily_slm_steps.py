"""Stage functions of examples/daily_slm.yaml (the user's daily SLM workflow, seed 000).

``make_inputs`` stands in for the upstream system that fills the lake's bronze zone each day;
``run_slm`` stands in for one small language model scoring the day's inputs. Both are
deterministic for a given date, so two runs of the same day give the same lake contents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stageflow import StageContext
from stageflow.executors.parquet_io import dataset_files, write_parts

KEYS = 40


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from ``parts`` (no global random state)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def make_inputs(date: str, rows: int, ctx: StageContext) -> dict[str, Any]:
    """The day's raw inputs: one row per event, ``key`` is what the models score."""
    table = pa.table(
        {
            "event_id": pa.array(range(rows), pa.int64()),
            "key": [f"k{int(_unit(date, i, 'key') * KEYS):02d}" for i in range(rows)],
            "signal": [round(_unit(date, i, "signal") * 10, 4) for i in range(rows)],
            "noise": [round(_unit(date, i, "noise"), 4) for i in range(rows)],
            "day": [date] * rows,
        }
    )
    out = ctx.output_dir() / "inputs"
    write_parts([table], out, rows_per_file=max(rows // 2, 1))
    return {"data": ctx.artifact(out), "rows": rows}


def run_slm(inputs: Path, slm_id: int, job_id: str, ctx: StageContext) -> dict[str, Any]:
    """Model ``slm_id`` scores every prepared row: ``value`` and ``confidence`` per key."""
    table = pa.concat_tables(pq.read_table(f) for f in dataset_files(inputs))
    weight = 0.5 + _unit("model", slm_id)
    ctx.logger.info("SLM %d scoring %d rows (weight %.3f)", slm_id, table.num_rows, weight)
    value = pc.round(pc.multiply(table["features"], weight), 4)
    confidence = pc.round(pc.subtract(1.0, pc.multiply(table["noise"], 0.5)), 4)
    results = pa.table(
        {
            "key": table["key"],
            "value": value,
            "confidence": confidence,
            "slm_id": pa.array([slm_id] * table.num_rows, pa.int32()),
            "job_id": pa.array([job_id] * table.num_rows),
        }
    )
    out = ctx.output_dir() / f"slm_{slm_id}"
    write_parts([results], out)
    ctx.progress(table.num_rows, table.num_rows, "rows")
    return {"results": ctx.artifact(out), "rows": results.num_rows}
