"""Stage functions of examples/ctr_train_infer.yaml (the user's CTR pipeline, seed 001)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ctr_model import make_ctr_data

from stageflow import StageContext
from stageflow.executors.parquet_io import dataset_files


def make_events(rows: int, infer_share: float, ctx: StageContext) -> dict[str, Any]:
    """The source warehouse's event table: impressions with labels and a train/infer split.

    Stands in for the table the user's Server 21 already has; it goes there over SSH.
    """
    raw = make_ctr_data(ctx.output_dir() / "raw", rows, seed=11)
    table = pa.concat_tables(pq.read_table(f) for f in dataset_files(raw))
    cut = round(rows * (1 - infer_share))
    split = pa.array(["train"] * cut + ["infer"] * (rows - cut))
    events = ctx.output_dir() / "events.parquet"
    pq.write_table(table.append_column("split", split), events, compression="zstd")
    return {"events": ctx.artifact(events), "rows": rows, "infer_rows": rows - cut}


def report(
    history: list[dict[str, Any]],
    inference: dict[str, Any],
    loaded: dict[str, Any],
    moved: list[int],
    predictions: Any,
    ctx: StageContext,
) -> dict[str, Any]:
    """The run's report JSON: loss/AUC per epoch, inference rows/s, bytes moved, the load."""
    scores = pa.concat_tables(pq.read_table(f) for f in dataset_files(predictions))
    numeric = [c for c in scores.column_names if c != "request_id"]
    document = {
        "run_id": ctx.run_id,
        "epochs": [{"epoch": h["epoch"], "loss": h["loss"], "auc": h.get("auc")} for h in history],
        "inference": {
            "rows": inference["rows"],
            "rows_per_s": inference["rows_per_s"],
            "parts": inference["parts"],
        },
        "predictions_mean": {c: pc.mean(scores[c]).as_py() for c in numeric},
        "bytes_moved": sum(moved),
        "table": {k: loaded[k] for k in ("table", "date", "rows", "path")},
    }
    path = ctx.output_dir() / "report.json"
    path.write_text(json.dumps(document, indent=2))
    ctx.logger.info("report: %s", json.dumps(document))
    return {"report": ctx.artifact(path), **document}
