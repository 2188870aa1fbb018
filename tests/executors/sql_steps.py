"""Data and stage functions for tests/executors/test_sql.py.

The tables are generated in plain Python from a seed, so a test can compute what a query must
return without asking any SQL engine.
"""

from __future__ import annotations

import csv
import hashlib
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stageflow import StageContext

REGIONS = ("north", "south", "east", "west")


def customers(seed: int, count: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": i, "region": rng.choice(REGIONS)} for i in range(1, count + 1)]


def orders(seed: int, count: int = 300, customer_count: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    return [
        {
            "order_id": i,
            "customer_id": rng.randint(1, customer_count + 2),  # some match no customer
            "amount": rng.randint(1, 10_000),
        }
        for i in range(count)
    ]


def write_tables(seed: int, ctx: StageContext) -> dict[str, Any]:
    """Orders as a directory of two parquet files, customers as one CSV file."""
    out = ctx.output_dir()
    rows = orders(seed)
    (out / "orders").mkdir()
    half = len(rows) // 2
    for index, chunk in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(chunk), out / "orders" / f"part_{index}.parquet")
    with open(out / "customers.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "region"])
        writer.writeheader()
        writer.writerows(customers(seed))
    return {
        "orders": ctx.artifact(out / "orders"),
        "customers": ctx.artifact(out / "customers.csv"),
    }


def read_rows(data: Path) -> dict[str, Any]:
    """What a consumer of the sql artifact sees: its files, and its rows in file order."""
    files = sorted(p.name for p in data.iterdir())
    rows: list[list[Any]] = []
    for name in sorted(files, key=lambda n: int(n.removeprefix("part_").split(".")[0])):
        rows += [list(r.values()) for r in pq.read_table(data / name).to_pylist()]
    return {"files": files, "rows": rows}


def digest_rows(data: Path) -> dict[str, Any]:
    """Row count and a digest of the sorted rows, for results too big for stage outputs."""
    rows = []
    for path in sorted(data.iterdir()):
        rows += [tuple(r.values()) for r in pq.read_table(path).to_pylist()]
    return {"rows": len(rows), "digest": rows_digest(rows), "files": len(list(data.iterdir()))}


def rows_digest(rows: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()
