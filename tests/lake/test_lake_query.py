"""DuckDB over the lake: views per table and catalog name, and nothing else reachable."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import store_dataset, write_dataset

from stageflow.errors import LakeError
from stageflow.lake.layout import PartitionKey, TableKey
from stageflow.lake.service import Lake
from stageflow.transfer.store import ContentStore


@pytest.fixture
def loaded(tmp_path: Path, lake: Lake, store: ContentStore) -> Lake:
    for day, values in [(1, [1, 2]), (2, [30])]:
        data = write_dataset(tmp_path / f"d{day}", [{"k": ["x"] * len(values), "v": values}])
        key = PartitionKey(TableKey("bronze", "inputs"), dt.date(2026, 11, day))
        lake.load(key, sha256=store_dataset(store, data), table="raw.inputs")
    return lake


def test_views_span_partitions_and_catalog_names(loaded: Lake) -> None:
    result = loaded.query("SELECT sum(v) AS total, count(*) AS n FROM bronze.inputs")
    assert result["rows"] == [[33, 3]] and result["columns"] == ["total", "n"]
    assert loaded.query("SELECT sum(v) FROM raw.inputs")["rows"] == [[33]]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO '/tmp/stageflow-lake-escape.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SET enable_external_access = true",
        "ATTACH 'escape.duckdb'",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; SELECT 2",
        "INSTALL httpfs",
    ],
)
def test_queries_cannot_leave_the_lake_or_write(loaded: Lake, sql: str) -> None:
    with pytest.raises(LakeError) as info:
        loaded.query(sql)
    assert info.value.status == 400
    assert not Path("/tmp/stageflow-lake-escape.csv").exists()


def test_copy_into_the_lake_itself_is_refused(loaded: Lake) -> None:
    target = loaded.root / "bronze" / "evil.csv"
    with pytest.raises(LakeError, match="one read-only SELECT"):
        loaded.query(f"COPY (SELECT 1) TO '{target}'")
    assert not target.exists()


def test_a_reader_cannot_read_outside_even_through_a_select(loaded: Lake, tmp_path: Path) -> None:
    outside = write_dataset(tmp_path / "outside", [{"secret": [42]}])
    with pytest.raises(LakeError, match=r"Permission|disabled"):
        loaded.query(f"SELECT * FROM read_parquet('{outside}/part_0.parquet')")
