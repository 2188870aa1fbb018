"""Stage functions of examples/files.yaml: write a directory artifact, read it elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stageflow import StageContext


def write_parts(parts: int, rows: int, ctx: StageContext) -> dict[str, Any]:
    out = ctx.output_dir() / "data"
    out.mkdir(exist_ok=True)
    for part in range(parts):
        lines = (json.dumps({"part": part, "row": row}) for row in range(rows))
        (out / f"part_{part}.jsonl").write_text("\n".join(lines) + "\n")
    return {"data": ctx.artifact(out)}


def count_rows(data: Path, ctx: StageContext) -> dict[str, Any]:
    counts = {f.name: sum(1 for _ in f.open()) for f in sorted(data.glob("*.jsonl"))}
    summary = ctx.output_dir() / "summary.json"
    summary.write_text(json.dumps(counts))
    return {"rows": sum(counts.values()), "summary": ctx.artifact(summary)}
