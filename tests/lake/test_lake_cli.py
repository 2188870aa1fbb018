"""`stageflow lake ls|query|load`, on the local lake and against a real data server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from conftest import write_dataset
from helpers import TOKEN
from typer.testing import CliRunner

from stageflow.cli.main import app
from stageflow.transfer.store import ContentStore

runner = CliRunner()


def _invoke(*args: str, stdout: bool = False) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout if stdout else result.output


def test_load_ls_and_query_the_local_lake(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", [{"k": ["a", "b"], "v": [1, 2]}, {"k": ["c"], "v": [3]}])
    out = _invoke(
        "lake", "load", "gold/scores", str(data), "--date", "2026-11-23", "--table", "prod.scores"
    )
    assert "loaded 3 rows into gold/scores/2026/11/23" in out
    home = Path(os.environ["STAGEFLOW_HOME"])
    assert (home / "lake/gold/scores/2026/11/23/_schema.json").is_file()

    listing = _invoke("lake", "ls")
    assert "gold/scores" in listing and "prod.scores" in listing and "(local;" in listing
    partitions = _invoke("lake", "ls", "gold/scores")
    assert "2026-11-23" in partitions and "k:string" in partitions
    answer = json.loads(
        _invoke("lake", "query", "SELECT sum(v) AS total FROM prod.scores", "--json", stdout=True)
    )
    assert answer["rows"] == [[6]]

    failed = runner.invoke(
        app,
        ["lake", "load", "gold/scores", str(data), "--expected-rows", "4", "--date", "2026-11-24"],
    )
    assert failed.exit_code == 1 and "row count check failed" in failed.output
    refused = runner.invoke(app, ["lake", "query", "COPY (SELECT 1) TO '/tmp/x.csv'"])
    assert refused.exit_code == 1 and "read-only SELECT" in refused.output


async def test_query_and_load_through_a_data_server(
    tmp_path: Path, data_server: tuple[str, ContentStore]
) -> None:
    url, _store = data_server
    env = {**os.environ, "STAGEFLOW_SERVER_URL": url, "STAGEFLOW_TOKEN": TOKEN}
    data = write_dataset(tmp_path / "d", [{"v": [5, 6, 7]}])

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stageflow",
            "lake",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("load", "silver/nums", str(data), "--date", "2026-01-02")
    assert code == 0, err
    assert f"lake: {url}" in err and "loaded 3 rows" in out
    assert (tmp_path / "lake/silver/nums/2026/01/02/part_0.parquet").is_file()
    code, out, err = await cli("query", "SELECT max(v) AS m FROM silver.nums", "--json")
    assert code == 0, err
    assert json.loads(out)["rows"] == [[7]]
