"""`uses: sql` in real pipelines: DuckDB and Spark over artifacts, and validate-time checks.

The remote export over SSH is in test_sql_remote.py, the lake source in test_sql_lake.py.
"""

from __future__ import annotations

import shutil
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import sql_steps
from helpers import finish, pipeline, start
from temporalio.client import Client

from stageflow.errors import SpecError
from stageflow.executors.registry import get_executor
from stageflow.executors.sql import SqlExecutor
from stageflow.executors.sql_spark import stop_spark
from stageflow.spec.validate import parse_pipeline
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

SEED = 7
JOIN = """
SELECT c.id AS customer, c.region, count(*) AS n, CAST(sum(o.amount) AS BIGINT) AS total
FROM orders o JOIN customers c ON o.customer_id = c.id
GROUP BY c.id, c.region
ORDER BY c.id
"""


def expected_join(seed: int) -> list[list[Any]]:
    """JOIN computed in plain Python from the generated tables."""
    region = {c["id"]: c["region"] for c in sql_steps.customers(seed)}
    count: dict[int, int] = defaultdict(int)
    total: dict[int, int] = defaultdict(int)
    for order in sql_steps.orders(seed):
        if order["customer_id"] in region:
            count[order["customer_id"]] += 1
            total[order["customer_id"]] += order["amount"]
    return [[cid, region[cid], count[cid], total[cid]] for cid in sorted(count)]


def _stages(queue: str, **queries: dict[str, Any]) -> dict[str, Any]:
    """A writer stage, one sql stage per entry of ``queries``, and a reader after each."""
    stages: dict[str, Any] = {
        "write": {
            "uses": "python",
            "queue": queue,
            "with": {"function": "sql_steps:write_tables", "seed": SEED},
        }
    }
    for name, with_ in queries.items():
        stages[name] = {
            "uses": "sql",
            "queue": queue,
            "needs": ["write"],
            "with": {
                "sources": {
                    "orders": "${write.outputs.orders}",
                    "customers": "${write.outputs.customers}",
                },
                **with_,
            },
        }
        stages[f"read_{name}"] = {
            "uses": "python",
            "queue": queue,
            "needs": [name],
            "with": {"function": "sql_steps:read_rows", "data": f"${{{name}.outputs.artifact}}"},
        }
    return stages


def test_registry_knows_the_sql_executor() -> None:
    assert get_executor("sql") is SqlExecutor


async def test_join_of_parquet_and_csv_artifacts_in_several_parts(
    client: Client, queue: str, data_plane: DataPlane
) -> None:
    spec = pipeline(_stages(queue, query={"query": JOIN, "rows_per_file": 5, "name": "spend"}))
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}

    expected = expected_join(SEED)
    assert len(expected) > 5  # the point: more rows than one part holds
    read = state.stages["read_query"].outputs
    assert read["rows"] == expected
    parts = -(-len(expected) // 5)
    assert read["files"] == [f"part_{i}.parquet" for i in range(parts)]

    outputs = state.stages["query"].outputs
    assert outputs["rows"] == len(expected)
    assert outputs["files"] == parts
    assert outputs["artifact"]["kind"] == "dir" and outputs["artifact"]["name"] == "spend"
    assert [c["name"] for c in outputs["columns"]] == ["customer", "region", "n", "total"]
    assert outputs["columns"][1]["type"] == "string"


async def test_an_empty_result_still_has_its_columns(
    client: Client, queue: str, data_plane: DataPlane
) -> None:
    query = "SELECT order_id, amount FROM orders WHERE amount < 0"
    spec = pipeline(_stages(queue, query={"query": query}))
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    outputs = state.stages["query"].outputs
    assert outputs["rows"] == 0 and outputs["files"] == 1
    assert [c["name"] for c in outputs["columns"]] == ["order_id", "amount"]
    assert state.stages["read_query"].outputs["rows"] == []


async def test_a_sql_error_fails_the_stage_once_with_duckdbs_message(
    client: Client, queue: str, data_plane: DataPlane
) -> None:
    spec = pipeline(
        {
            "bad": {
                "uses": "sql",
                "queue": queue,
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
                "with": {"query": "SELEC region FROM nowhere"},
            }
        }
    )
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    bad = state.stages["bad"]
    assert state.status == "failed" and bad.status == "failed"
    assert 'syntax error at or near "SELEC"' in (bad.error or "")
    assert bad.attempts == 1  # not retried: the query will not get better


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark local mode needs java on PATH")
async def test_spark_local_mode_gives_the_rows_duckdb_gives(
    client: Client, queue: str, data_plane: DataPlane
) -> None:
    spark = {"query": JOIN, "engine": "spark", "rows_per_file": 4, "spark": {"master": "local[1]"}}
    spec = pipeline(_stages(queue, duck={"query": JOIN}, spark=spark))
    try:
        async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
            state = await finish(client, await start(client, spec), timeout=180)
    finally:
        stop_spark()  # the worker process keeps its session; this test process need not
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    expected = expected_join(SEED)
    duck_rows = state.stages["read_duck"].outputs["rows"]
    spark_rows = state.stages["read_spark"].outputs["rows"]
    assert duck_rows == expected
    assert sorted(spark_rows) == expected  # Spark's parts are not globally ordered
    spark_out = state.stages["spark"].outputs
    assert spark_out["rows"] == len(expected)
    assert spark_out["files"] >= -(-len(expected) // 4)
    assert state.stages["read_spark"].outputs["files"][0] == "part_0.parquet"
    assert [c["name"] for c in spark_out["columns"]] == ["customer", "region", "n", "total"]


# --- validate time -----------------------------------------------------------------------------


def test_bad_parameters_are_reported_with_line_and_field() -> None:
    text = textwrap.dedent(
        """
        name: p
        stages:
          q:
            uses: sql
            with:
              query: SELECT 1
              engine: postgres
              rows_per_file: 0
              sources:
                events: 42
              remote:
                host: ssh://etl@server21
                cli: spark-sql -f /dev/stdin
                dialect: mysql
        """
    ).lstrip()
    with pytest.raises(SpecError) as info:
        parse_pipeline(text, "p.yaml")
    lines = text.splitlines()
    found = {issue.field: issue for issue in info.value.issues}

    def line_of(needle: str) -> int:
        return next(n for n, line in enumerate(lines, 1) if needle in line)

    for field, needle in [
        ("stages.q.with.engine", "engine:"),
        ("stages.q.with.rows_per_file", "rows_per_file:"),
        ("stages.q.with.sources.events", "events:"),
        ("stages.q.with.remote.host", "host:"),
        ("stages.q.with.remote.dialect", "dialect:"),
    ]:
        assert field in found, [str(i) for i in info.value.issues]
        assert found[field].line == line_of(needle), str(found[field])
    assert "names no file" in found["stages.q.with.remote.host"].message


@pytest.mark.parametrize(
    ("with_", "field", "message"),
    [
        ({"query": "SELECT 1", "sources": {"bad name": "/x.csv"}}, "sources", "identifier"),
        ({"query": "SELECT 1", "sources": {"t": "lake://raw"}}, "sources", "lake://"),
        ({"query": "SELECT 1", "format": {"t": "csv"}}, (), "not in sources"),
        ({"query": "SELECT 1", "name": "../up"}, "name", "plain file name"),
        ({"query": ""}, "query", "at least 1"),
        (
            {
                "query": "SELECT 1",
                "sources": {"t": "/x.csv"},
                "remote": {"host": "ssh://h/d", "cli": "x"},
            },
            (),
            "drop `sources`",
        ),
        ({"query": "SELECT 1", "remote": {"host": "ssh://h/it's", "cli": "x"}}, "remote", "quotes"),
    ],
)
def test_check_params_rejects(with_: dict[str, Any], field: Any, message: str) -> None:
    problems = SqlExecutor.check_params(with_)
    assert problems, with_
    locs = [loc for loc, _ in problems]
    if field:
        assert any(loc and loc[0] == field for loc in locs), problems
    assert any(message in text for _, text in problems), problems


def test_templated_sources_are_left_for_the_run() -> None:
    with_ = {"query": "SELECT * FROM t", "sources": {"t": "${a.outputs.artifact}"}}
    assert SqlExecutor.check_params(with_) == []


def test_importing_the_executor_does_not_import_pyspark() -> None:
    import subprocess
    import sys

    code = "import sys, stageflow.executors.sql; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sources_detect_their_format(tmp_path: Path) -> None:
    from stageflow.executors.sql import _find_files

    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "a.csv").write_text("x\n1\n")
    (tmp_path / "data.txt").write_text("x\n1\n")
    assert _find_files("t", tmp_path / "csvs", None).format == "csv"
    assert _find_files("t", tmp_path / "data.txt", "csv").format == "csv"
    with pytest.raises(Exception, match="set format"):
        _find_files("t", tmp_path / "data.txt", None)
