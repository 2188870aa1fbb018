"""``uses: aggregate``: group parquet artifacts and write the result into a lake table.

The notes' ``aggregate_results``: concatenate what the workers produced (a matrix fan-in
gives a list of artifacts), group by ``group_by``, compute ``aggregations`` such as
``{value: "mean(value)", confidence: "mean(confidence)"}``, and load the result into the
lake (``gold/{dataset}/{yyyy}/{mm}/{dd}``, with its ``_schema.json``). DuckDB does the work in
a thread, streaming the result into ``part_N.parquet`` files, so memory stays bounded by
DuckDB's, not by the input size.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import duckdb
from pydantic import Field, field_validator

from stageflow.errors import ConfigError
from stageflow.executors.base import Executor
from stageflow.executors.load import LakeTargetParams, load_into_lake
from stageflow.executors.parquet_io import dataset_files, write_parts
from stageflow.worker.context import StageContext

__all__ = ["FUNCTIONS", "AggregateExecutor"]

FUNCTIONS: dict[str, str] = {
    "count": "count({})",
    "sum": "sum({})",
    "mean": "avg({})",
    "avg": "avg({})",
    "min": "min({})",
    "max": "max({})",
    "count_distinct": "count(DISTINCT {})",
    "median": "median({})",
    "stddev": "stddev_samp({})",
    "variance": "var_samp({})",
    "first": "first({})",
    "last": "last({})",
}
"""Aggregation functions ``aggregations`` may use, and the DuckDB SQL each becomes."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_CALL = re.compile(r"^\s*([a-z_]+)\s*\(\s*(\*|[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r:.60} is not a column name (letters, digits, _)")
    return name


def _parse_call(spec: str) -> tuple[str, str]:
    match = _CALL.match(spec)
    if not match or match.group(1) not in FUNCTIONS:
        raise ValueError(
            f"{spec!r:.60}: write function(column) with one of {', '.join(FUNCTIONS)} "
            "(count(*) counts rows)"
        )
    func, column = match.groups()
    if column == "*" and func != "count":
        raise ValueError(f"{spec!r:.60}: only count takes *")
    return func, column


class AggregateParams(LakeTargetParams):
    inputs: str | list[str] = Field(
        description="Artifact(s): parquet directories or files; a matrix fan-in gives a list."
    )
    group_by: list[str] = Field(default_factory=list, description="Columns to group by.")
    aggregations: dict[str, str] = Field(
        min_length=1, description='Output column -> "function(column)", e.g. "mean(value)".'
    )
    rows_per_file: int = Field(1_000_000, ge=1, description="Rows per output parquet part.")

    @field_validator("group_by")
    @classmethod
    def _columns(cls, value: list[str]) -> list[str]:
        for name in value:
            _ident(name)
        if len(set(value)) != len(value):
            raise ValueError("group_by names a column twice")
        return value

    @field_validator("aggregations")
    @classmethod
    def _aggregations(cls, value: dict[str, str]) -> dict[str, str]:
        for out, spec in value.items():
            _ident(out)
            _parse_call(spec)
        return value

    def select_sql(self, files: list[Path]) -> str:
        """The DuckDB query: group columns, then one aggregate per output column."""
        keys = [f'"{c}"' for c in self.group_by]
        aggs = []
        for out, spec in self.aggregations.items():
            func, column = _parse_call(spec)
            arg = "*" if column == "*" else f'"{column}"'
            aggs.append(f'{FUNCTIONS[func].format(arg)} AS "{out}"')
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        source = f"read_parquet([{listed}], union_by_name = true)"
        sql = f"SELECT {', '.join([*keys, *aggs])} FROM {source}"
        if keys:
            sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}"
        return sql


def _aggregate(params: AggregateParams, out_dir: Path) -> tuple[int, list[dict[str, str]]]:
    paths = [params.inputs] if isinstance(params.inputs, str) else params.inputs
    files = [f for p in paths for f in dataset_files(Path(p))]
    if not files:
        raise ConfigError("`inputs` hold no .parquet files to aggregate")
    # One thread: floating-point sums then add up in the same order on every run and host, so
    # the same inputs give a bit-identical table (parallel aggregation does not).
    con = duckdb.connect(":memory:", config={"threads": 1})
    try:
        try:
            reader = con.sql(params.select_sql(files)).to_arrow_reader(65_536)
        except duckdb.Error as exc:
            raise ConfigError(f"aggregate failed: {exc}; check group_by and aggregations") from None
        _files, rows = write_parts(
            reader, out_dir, schema=reader.schema, rows_per_file=params.rows_per_file
        )
        fields = [{"name": f.name, "type": str(f.type)} for f in reader.schema]
    finally:
        con.close()
    return rows, fields


class AggregateExecutor(Executor):
    name = "aggregate"
    Params = AggregateParams

    async def run(self, params: AggregateParams, ctx: StageContext) -> dict[str, Any]:
        if not ctx.server_url:
            raise ConfigError(
                f"`{ctx.stage}` writes a lake table, which lives on the data server: set "
                "STAGEFLOW_DATA_SERVER_URL for this worker (stageflow run / up set it for you)"
            )
        out_dir = ctx.output_dir() / "aggregated"
        rows, fields = await asyncio.to_thread(_aggregate, params, out_dir)
        ctx.progress(rows, rows, "rows")
        # The aggregate is this stage's own output: once the server holds it, drop ours.
        result = await load_into_lake(ctx, out_dir, params, expected_rows=rows, keep_local=False)
        return {
            "rows": rows,
            "table": params.table or f"{params.zone}.{params.target_dataset}",
            "zone": params.zone,
            "dataset": params.target_dataset,
            "date": result["date"],
            "path": result["path"],
            "fields": fields,
            "artifact": result["artifact"],
        }
