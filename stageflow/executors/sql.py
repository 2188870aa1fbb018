"""``uses: sql``: one SQL query over lake tables and parquet/CSV files, exported as parquet parts.

The query runs in DuckDB on the worker by default, in Spark SQL with ``engine: spark``
(``sql_spark.py``), or on a data-source host that runs nothing of ours with ``remote:``
(``sql_remote.py``: its SQL client exports there, the files come back over SSH). Whatever ran it,
the result is one artifact: a directory of ``part_N.parquet`` files (``parquet_io.py``), and the
outputs say how many rows, files and which columns it holds.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.errors import LakeError, StageError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.parquet_io import count_rows, dataset_files, write_parts
from stageflow.lake.layout import parse_lake_url
from stageflow.transfer.ssh import SshUrl
from stageflow.worker.context import StageContext

__all__ = ["Source", "SqlExecutor", "SqlParams", "sql_failed"]

Format = Literal["parquet", "csv"]
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SUFFIXES: dict[str, Format] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_BATCH_ROWS = 65_536


class SparkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master: str = Field("local[2]", description="Spark master: local[N] or a cluster URL.")
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra Spark settings (spark.executor.memory, ...)."
    )


class RemoteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="ssh://user@host:port/staging/dir where the export is written.")
    cli: str = Field(description="Command on that host that runs the SQL it reads on stdin.")
    dialect: Literal["duckdb", "spark", "hive"] = Field(
        "duckdb", description="How the export statement is spelled for that client."
    )
    cleanup_remote: bool = Field(False, description="Remove the remote export after the pull.")

    @field_validator("host")
    @classmethod
    def _ssh_url(cls, value: str) -> str:
        path = SshUrl.parse(value).path
        if any(ch in path for ch in "'\\\"`$"):
            raise ValueError(f"{value!r}: the staging dir must not contain quotes, ` $ or \\")
        return value


class SqlParams(ExecutorParams):
    query: str = Field(min_length=1, description="The SQL query (one SELECT or WITH statement).")
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="View name -> local path (artifact), or lake://zone/dataset[/YYYY-MM-DD].",
    )
    format: dict[str, Format] = Field(
        default_factory=dict, description="View name -> parquet|csv, where the suffix misleads."
    )
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkOptions = Field(default_factory=SparkOptions)  # type: ignore[arg-type]
    rows_per_file: int = Field(1_000_000, ge=1, description="Rows per part file at most.")
    name: str = Field("result", description="Name of the result artifact.")
    remote: RemoteOptions | None = None

    @field_validator("sources")
    @classmethod
    def _view_names(cls, value: dict[str, str]) -> dict[str, str]:
        for view, source in value.items():
            if not _IDENTIFIER.match(view):
                raise ValueError(f"view name {view!r} must be a plain SQL identifier")
            if source.startswith("lake://"):
                try:
                    parse_lake_url(source)
                except LakeError as exc:
                    raise ValueError(str(exc)) from None
        return value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"name {value!r} must be a plain file name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SqlParams:
        unknown = set(self.format) - set(self.sources)
        if unknown:
            raise ValueError(f"format names views that are not in sources: {sorted(unknown)}")
        if self.remote is not None and self.sources:
            raise ValueError("a remote query reads the host's own tables: drop `sources`")
        return self


@dataclass(frozen=True)
class Source:
    """A view the query can read: its data files and their format."""

    view: str
    files: list[Path]
    format: Format


def sql_failed(message: str) -> StageError:
    """The query itself is wrong (syntax, unknown column): retrying cannot fix it."""
    error = StageError(f"SQL failed: {message}")
    error.non_retryable = True
    return error


class SqlExecutor(Executor):
    name = "sql"
    Params = SqlParams

    async def run(self, params: SqlParams, ctx: StageContext) -> dict[str, Any]:
        out = ctx.output_dir() / params.name
        if params.remote is not None:
            from stageflow.executors.sql_remote import export_remote

            files = await export_remote(params.query, params.remote, ctx, out)
            try:
                rows = await asyncio.to_thread(count_rows, files)
            except pa.ArrowException as exc:
                raise sql_failed(f"the remote export is not parquet: {exc}") from None
        else:
            sources = [await _source(v, value, params, ctx) for v, value in params.sources.items()]
            await asyncio.to_thread(_clear, out)

            def progress(rows: int) -> None:
                ctx.progress(rows, None, "rows")

            if params.engine == "spark":
                from stageflow.executors.sql_spark import run_spark

                files, rows = await run_spark(params, sources, out, progress, ctx.stage_id)
            else:
                files, rows = await run_duckdb(
                    params.query, sources, out, params.rows_per_file, progress
                )
        schema = await asyncio.to_thread(pq.read_schema, files[0])
        artifact = await ctx.publish(out, params.name)
        return {
            "artifact": artifact,
            "rows": rows,
            "files": len(files),
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        }


async def _source(view: str, value: str, params: SqlParams, ctx: StageContext) -> Source:
    """Where a view's data lies on this worker, fetching a lake dataset first."""
    if value.startswith("lake://"):
        from stageflow.lake.client import fetch_lake_source

        path = await fetch_lake_source(ctx, value)
    else:
        path = Path(value)
        if not path.is_absolute():
            raise sql_failed(f"source {view}: {value!r} is not an absolute path on this worker")
    return await asyncio.to_thread(_find_files, view, path, params.format.get(view))


def _find_files(view: str, path: Path, forced: Format | None) -> Source:
    if not path.exists():
        raise sql_failed(f"source {view}: {path} does not exist on this worker")
    if path.is_file():
        fmt = forced or _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise sql_failed(f"source {view}: cannot tell the format of {path.name}: set format")
        return Source(view, [path], fmt)
    formats: list[Format] = [forced] if forced else ["parquet", "csv"]
    for candidate in formats:
        suffixes = tuple(s for s, f in _SUFFIXES.items() if f == candidate)
        files = dataset_files(path, suffixes)
        if files:
            return Source(view, files, candidate)
    raise sql_failed(f"source {view}: no parquet or CSV files under {path}")


def _clear(out: Path) -> None:
    """A retry on this worker starts from an empty result directory."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def run_duckdb(
    query: str,
    sources: list[Source],
    out: Path,
    rows_per_file: int,
    progress: Callable[[int], None],
) -> tuple[list[Path], int]:
    """Run ``query`` in a fresh in-memory DuckDB, streaming the result into part files.

    The query runs in a thread (DuckDB releases the GIL), so heartbeats keep flowing; a
    cancelled stage interrupts it. Batches stream from DuckDB to the writer: memory stays at a
    few batches whatever the size of the result.
    """
    con = duckdb.connect(":memory:")
    try:
        return await asyncio.to_thread(
            _duckdb_export, con, query, sources, out, rows_per_file, progress
        )
    except asyncio.CancelledError:
        con.interrupt()
        raise
    finally:
        # The thread may still be unwinding after an interrupt; closing waits for it.
        await asyncio.to_thread(con.close)


def _duckdb_export(
    con: duckdb.DuckDBPyConnection,
    query: str,
    sources: list[Source],
    out: Path,
    rows_per_file: int,
    progress: Callable[[int], None],
) -> tuple[list[Path], int]:
    try:
        for source in sources:
            reader = "read_parquet" if source.format == "parquet" else "read_csv_auto"
            files = "[" + ", ".join(_quote(str(f)) for f in source.files) + "]"
            con.execute(f'CREATE VIEW "{source.view}" AS SELECT * FROM {reader}({files})')
        relation = con.sql(query)
        if relation is None:
            raise sql_failed("the statement returns no rows: give a SELECT (or WITH) query")
        batches = relation.to_arrow_reader(_BATCH_ROWS)
    except duckdb.Error as exc:
        raise sql_failed(str(exc)) from None

    def counted() -> Any:
        done = 0
        try:
            for batch in batches:
                done += batch.num_rows
                yield batch
                progress(done)
        except (duckdb.Error, OSError) as exc:  # found while executing: arrives as OSError
            raise sql_failed(str(exc)) from None

    return write_parts(counted(), out, schema=batches.schema, rows_per_file=rows_per_file)
