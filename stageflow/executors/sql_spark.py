"""``engine: spark``: the ``sql`` executor's query in Spark SQL, through pyspark.

A SparkSession takes seconds to start (a JVM), so one is kept per worker process and reused by
every stage that asks for the same master and settings; a stage asking for others replaces it.
Spark writes its own ``part-00000-<uuid>.snappy.parquet`` names; they are renamed into the
``part_N.parquet`` layout every stageflow table uses.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.errors import ConfigError
from stageflow.executors.parquet_io import count_rows, dataset_files, part_name

if TYPE_CHECKING:
    from stageflow.executors.sql import Source, SqlParams

__all__ = ["run_spark", "spark_session", "stop_spark"]

_lock = threading.Lock()
_session: tuple[tuple[Any, ...], Any] | None = None


def spark_session(master: str, conf: dict[str, Any], app_name: str) -> Any:
    """The process's SparkSession for ``master`` and ``conf``, started on first use."""
    global _session
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(
            "engine: spark needs pyspark: pip install 'stageflow[spark]' (and Java 17+ on PATH)"
        ) from None
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ConfigError("engine: spark needs Java 17+: install a JDK or set JAVA_HOME")
    key = (master, tuple(sorted((k, str(v)) for k, v in conf.items())))
    with _lock:
        if _session is not None:
            if _session[0] == key:
                return _session[1]
            _session[1].stop()
            _session = None
        builder = (
            SparkSession.builder.master(master)
            .appName(app_name)
            .config("spark.ui.enabled", "false")
            .config("spark.sql.parquet.compression.codec", "zstd")
        )
        for name, value in conf.items():
            builder = builder.config(name, str(value))
        session = builder.getOrCreate()
        _session = (key, session)
        return session


async def run_spark(
    params: SqlParams,
    sources: list[Source],
    out: Path,
    progress: Callable[[int], None],
    app_name: str,
) -> tuple[list[Path], int]:
    """Run the query with Spark in a thread (the JVM does the work; heartbeats keep flowing)."""
    return await asyncio.to_thread(_export, params, sources, out, progress, app_name)


def _export(
    params: SqlParams,
    sources: list[Source],
    out: Path,
    progress: Callable[[int], None],
    app_name: str,
) -> tuple[list[Path], int]:
    from stageflow.executors.sql import sql_failed

    spark = spark_session(params.spark.master, params.spark.conf, f"stageflow {app_name}")
    from pyspark.errors import PySparkException

    staging = out.parent / f".{out.name}.spark"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for source in sources:
            paths = [str(f) for f in source.files]
            if source.format == "parquet":
                frame = spark.read.parquet(*paths)
            else:
                frame = spark.read.option("header", True).option("inferSchema", True).csv(paths)
            frame.createOrReplaceTempView(source.view)
        result = spark.sql(params.query)
        result.write.option("maxRecordsPerFile", params.rows_per_file).option(
            "compression", "zstd"
        ).parquet(str(staging))
    except PySparkException as exc:
        raise sql_failed(_first_line(exc)) from None
    finally:
        for source in sources:
            spark.catalog.dropTempView(source.view)
    files = []
    for index, written in enumerate(dataset_files(staging)):
        files.append(written.replace(out / part_name(index)))
    shutil.rmtree(staging, ignore_errors=True)
    rows = count_rows(files)
    progress(rows)
    return files, rows


def _first_line(exc: Exception) -> str:
    """Spark's message without the JVM stack trace that follows it."""
    text = str(exc).strip()
    return text.split("\n\tat ", 1)[0][:4000]


def stop_spark() -> None:
    """Stop the process's SparkSession, if one was started (worker shutdown, tests)."""
    global _session
    with _lock:
        if _session is not None:
            _session[1].stop()
            _session = None
