"""``_schema.json``: what a partition (and a whole table) holds, readable without parquet tools.

Beside each partition's files::

    {"table_name": "prod.campaign_scores", "zone": "gold", "dataset": "campaign_scores",
     "date": "2026-11-23", "run_id": "...", "job_id": "...", "num_records": 1200,
     "files": [{"name": "part_0.parquet", "sha256": "...", "size": 5123, "rows": 1200}],
     "artifact": {"sha256": "...", "size": 5123},
     "schema": {"fields": [{"name": "key", "type": "string"}, ...]}, "loaded_at": "..."}

and one per table in ``{zone}/{dataset}/_schema.json`` that sums the partitions (``dates``,
``num_records``, the latest partition's fields). The per-file hashes let the data server serve
a partition as a ``kind: dir`` artifact without hashing it again.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa

from stageflow.errors import LakeError

__all__ = ["arrow_fields", "read_schema", "table_summary", "write_json_atomic"]


def arrow_fields(schema: pa.Schema) -> list[dict[str, str]]:
    """``[{"name", "type"}]`` with Arrow's type names (``int64``, ``string``, ``double``…)."""
    return [{"name": field.name, "type": str(field.type)} for field in schema]


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to a temp file beside ``path``, fsync, rename: readers see old or new."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_schema(path: Path) -> dict[str, Any]:
    """A ``_schema.json``; LakeError (500) when it is damaged, since only the lake writes it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LakeError(f"{path} is unreadable ({exc}): reload that partition", status=500) from exc
    if not isinstance(doc, dict):
        raise LakeError(f"{path} is not a JSON object: reload that partition", status=500)
    return doc


def table_summary(zone: str, dataset: str, partitions: list[dict[str, Any]]) -> dict[str, Any]:
    """The table-level ``_schema.json`` from its partitions' (sorted by date)."""
    latest = partitions[-1] if partitions else {}
    names = sorted({p["table_name"] for p in partitions if p.get("table_name")})
    return {
        "zone": zone,
        "dataset": dataset,
        "table_name": latest.get("table_name") or f"{zone}.{dataset}",
        "table_names": names,
        "num_records": sum(int(p.get("num_records", 0)) for p in partitions),
        "num_partitions": len(partitions),
        "dates": [p["date"] for p in partitions],
        "size": sum(int(p.get("artifact", {}).get("size", 0)) for p in partitions),
        "schema": latest.get("schema", {"fields": []}),
        "run_id": latest.get("run_id", ""),
        "job_id": latest.get("job_id", ""),
        "date": latest.get("date"),
        "updated_at": latest.get("loaded_at"),
    }
