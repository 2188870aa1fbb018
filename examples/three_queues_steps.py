"""Stage functions of examples/three_queues.yaml: the light work on the `default` queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ctr_model import make_ctr_data

from stageflow import StageContext
from stageflow.executors.parquet_io import count_rows, dataset_files, write_parts

TOPICS = ["pricing", "delivery", "returns", "quality", "support", "billing"]


def make_samples(rows: int, ctx: StageContext) -> dict[str, Any]:
    """Training samples (synthetic impressions with click/conversion labels)."""
    out = make_ctr_data(ctx.output_dir() / "samples", rows, seed=7)
    return {"data": ctx.artifact(out), "rows": rows}


def make_documents(count: int, ctx: StageContext) -> dict[str, Any]:
    """Customer feedback documents for the API stage to analyse."""
    docs = pa.table(
        {
            "doc_id": list(range(count)),
            "text": [
                f"customer {i} writes about {TOPICS[i % len(TOPICS)]}: it could be better"
                for i in range(count)
            ],
        }
    )
    out = ctx.output_dir() / "documents"
    write_parts([docs], out)
    return {"data": ctx.artifact(out), "documents": count}


def report(
    history: list[dict[str, Any]],
    answers: Path,
    usage: dict[str, int],
    ctx: StageContext,
) -> dict[str, Any]:
    """One summary of the run: the model's last epoch and what the API calls gave and cost."""
    files = dataset_files(answers)
    first = pq.read_table(files[0]).slice(0, 1).to_pylist() if files else []
    summary = {
        "epochs": len(history),
        "last_epoch": history[-1] if history else None,
        "answers": count_rows(files),
        "tokens": usage.get("total_tokens", 0),
        "example_answer": first[0]["response"] if first else None,
    }
    ctx.logger.info("report: %s", summary)
    return summary
