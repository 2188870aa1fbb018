"""``uses: load``: put a directory of parquet files into the lake, with a row-count check.

What the notes call "loading the results into a Hive table": the stage's ``data`` (an artifact
from an upstream stage) is sent to the data server, which installs it atomically as one day
of ``{zone}/{dataset}`` and registers ``table`` (``prod.campaign_scores``) in the lake catalog.
The server counts the rows it installed from the parquet footers and refuses the load, leaving
the lake as it was, unless they equal ``expected_rows`` (default: the rows counted here before
sending, so bytes lost or mangled on the way cannot pass unnoticed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from stageflow.errors import ConfigError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.parquet_io import count_rows, dataset_files, part_name
from stageflow.lake.catalog import validate_table_name
from stageflow.lake.client import LakeClient
from stageflow.lake.layout import parse_date, validate_dataset
from stageflow.worker.context import StageContext

__all__ = ["LakeTargetParams", "LoadExecutor", "load_into_lake"]


class LakeTargetParams(ExecutorParams):
    """Where in the lake a stage's table goes (shared by ``load`` and ``aggregate``)."""

    zone: Literal["bronze", "silver", "gold"] = Field("gold", description="Lake zone.")
    dataset: str | None = Field(
        None, description="Lake dataset (default: the part after the dot of `table`)."
    )
    table: str | None = Field(
        None, description="Catalog name to register, schema.table (e.g. prod.campaign_scores)."
    )
    date: str | None = Field(
        None, description="Partition date YYYY-MM-DD (default: today in UTC; use ${run.date})."
    )
    mode: Literal["overwrite", "append"] = Field(
        "overwrite", description="Replace the day's partition, or add files to it."
    )

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        return None if value is None else _plain(validate_dataset, value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return None if value is None else _plain(validate_table_name, value)

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: object) -> str | None:
        # YAML reads an unquoted 2026-11-23 as a date: take it as one.
        return None if value is None else _plain(parse_date, value).isoformat()

    @model_validator(mode="after")
    def _named(self) -> LakeTargetParams:
        if self.dataset is None and self.table is None:
            raise ValueError("give `dataset` (and `zone`), or a catalog `table` to name it after")
        return self

    @property
    def target_dataset(self) -> str:
        return self.dataset or str(self.table).split(".")[1]

    @property
    def target_date(self) -> str:
        return self.date or dt.datetime.now(dt.UTC).date().isoformat()


def _plain(check: Any, value: object) -> Any:
    """Run a lake name check, turning its LakeError into the ValueError pydantic reports."""
    try:
        return check(value)
    except Exception as exc:
        raise ValueError(str(exc)) from None


class LoadParams(LakeTargetParams):
    data: str | list[str] = Field(
        description="Artifact: a directory of parquet files (or one file), or a list of them "
        "(a matrix stage's outputs), loaded together as one partition."
    )
    expected_rows: int | None = Field(
        None, ge=0, description="Rows the load must hold (default: counted here before sending)."
    )


async def load_into_lake(
    ctx: StageContext,
    path: Path,
    target: LakeTargetParams,
    *,
    expected_rows: int | None,
    keep_local: bool,
) -> dict[str, Any]:
    """Publish ``path``, send it to the data server and install it as ``target``'s partition.

    Returns the server's answer (the partition's ``_schema.json`` plus ``path``) and the ref
    the data now has on the server under ``"artifact"``.
    """
    if not ctx.server_url:
        raise ConfigError(
            f"`{ctx.stage}` loads into the lake, which lives on the data server: set "
            "STAGEFLOW_DATA_SERVER_URL for this worker (stageflow run / up set it for you)"
        )
    ref = await ctx.publish(path, f"{target.target_dataset}-{target.target_date}")
    ref = await ctx.data_plane.push(ref, ctx.server_url, keep_local=keep_local)
    client = LakeClient(ctx.server_url, ctx.data_plane.token)
    result = await client.load(
        zone=target.zone,
        dataset=target.target_dataset,
        date=target.target_date,
        artifact=ref,
        run_id=ctx.run_id,
        job_id=ctx.stage_id,
        table=target.table,
        expected_rows=expected_rows,
        mode=target.mode,
    )
    return {**result, "artifact": ref}


class LoadExecutor(Executor):
    name = "load"
    Params = LoadParams

    async def run(self, params: LoadParams, ctx: StageContext) -> dict[str, Any]:
        if isinstance(params.data, list):
            path = await asyncio.to_thread(_combine, [Path(p) for p in params.data], ctx)
        else:
            path = Path(params.data)
        files = await asyncio.to_thread(dataset_files, path)
        if not files:
            raise ConfigError(f"`data` ({path.name}) holds no .parquet files to load")
        expected = params.expected_rows
        if expected is None:
            expected = await asyncio.to_thread(count_rows, files)
        # The data is this stage's input: other stages may still fetch it from this worker.
        result = await load_into_lake(ctx, path, params, expected_rows=expected, keep_local=True)
        return {
            "table": params.table or f"{params.zone}.{params.target_dataset}",
            "zone": params.zone,
            "dataset": params.target_dataset,
            "date": result["date"],
            "rows": result["added_records"],
            "partition_rows": result["num_records"],
            "path": result["path"],
            "files": len(result["files"]),
            "artifact": result["artifact"],
        }


def _combine(inputs: list[Path], ctx: StageContext) -> Path:
    """One directory holding every input's parquet files as ``part_N`` (hard links, no copy)."""
    combined = ctx.output_dir() / "combined"
    shutil.rmtree(combined, ignore_errors=True)
    combined.mkdir(parents=True)
    index = 0
    for source in inputs:
        for file in dataset_files(source):
            target = combined / part_name(index)
            try:
                os.link(file, target)
            except OSError:
                shutil.copyfile(file, target)
            index += 1
    return combined
