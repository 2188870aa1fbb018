"""Installing partitions: overwrite, append, the row-count check, crashes, bad names."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import store_dataset, write_dataset

from stageflow.errors import LakeError
from stageflow.lake.layout import PartitionKey, TableKey
from stageflow.lake.service import Lake
from stageflow.lake.writer import install_partition, list_partitions
from stageflow.transfer.store import ContentStore

KEY = PartitionKey(TableKey("silver", "scores"), dt.date(2026, 11, 23))
HERE = Path(__file__).resolve().parent


def _values(partition: Path) -> list[int]:
    files = sorted(partition.glob("part_*.parquet"), key=lambda p: int(p.stem[5:]))
    return [v for f in files for v in pq.read_table(f).column("v").to_pylist()]


def _dataset(tmp_path: Path, store: ContentStore, name: str, *parts: list[int]) -> str:
    return store_dataset(store, write_dataset(tmp_path / name, [{"v": p} for p in parts]))


def test_overwrite_replaces_and_append_adds(
    tmp_path: Path, lake: Lake, store: ContentStore
) -> None:
    first = _dataset(tmp_path, store, "a", [1, 2], [3])
    second = _dataset(tmp_path, store, "b", [10, 20, 30, 40])
    third = _dataset(tmp_path, store, "c", [7])
    final = KEY.path(lake.root)

    doc = lake.load(KEY, sha256=first, table="prod.scores", run_id="r1", job_id="r1/agg")
    assert _values(final) == [1, 2, 3] and doc["num_records"] == 3
    lake.load(KEY, sha256=second)
    assert _values(final) == [10, 20, 30, 40]
    doc = lake.load(KEY, sha256=third, mode="append", expected_rows=1)
    assert _values(final) == [10, 20, 30, 40, 7]
    assert (doc["num_records"], doc["added_records"]) == (5, 1)
    assert [f["name"] for f in doc["files"]] == ["part_0.parquet", "part_1.parquet"]

    schema = json.loads((final / "_schema.json").read_text())
    assert schema["date"] == "2026-11-23" and schema["num_records"] == 5
    assert schema["schema"]["fields"] == [{"name": "v", "type": "int64"}]
    assert schema["zone"] == "silver" and schema["dataset"] == "scores"
    # file hashes in _schema.json are the real content hashes of the lake files
    for item in schema["files"]:
        assert store.path(item["sha256"]).read_bytes() == (final / item["name"]).read_bytes()
    other = PartitionKey(KEY.table, dt.date(2026, 11, 24))
    lake.load(other, sha256=first)
    table = json.loads((KEY.table.path(lake.root) / "_schema.json").read_text())
    assert table["num_records"] == 5 + 3
    assert table["dates"] == ["2026-11-23", "2026-11-24"]
    # nothing but the partitions (and the lock) is left in the dataset dir
    leftovers = {p.name for p in KEY.table.path(lake.root).iterdir()}
    assert leftovers == {"2026", "_schema.json", ".lock"}


def test_a_row_count_mismatch_installs_nothing(
    tmp_path: Path, lake: Lake, store: ContentStore
) -> None:
    lake.load(KEY, sha256=_dataset(tmp_path, store, "a", [1, 2, 3]))
    bigger = _dataset(tmp_path, store, "b", [1, 2, 3, 4])
    for mode in ("overwrite", "append"):
        with pytest.raises(LakeError, match="holds 4 rows, 3 were expected"):
            lake.load(KEY, sha256=bigger, expected_rows=3, mode=mode)  # type: ignore[arg-type]
    assert _values(KEY.path(lake.root)) == [1, 2, 3]
    assert not [p for p in KEY.table.path(lake.root).iterdir() if p.name.startswith(".tmp")]


def test_mixed_schemas_and_non_parquet_are_refused(
    tmp_path: Path, lake: Lake, store: ContentStore
) -> None:
    mixed = write_dataset(tmp_path / "m", [{"v": [1]}, {"w": ["x"]}])
    with pytest.raises(LakeError, match="one schema"):
        lake.load(KEY, sha256=store_dataset(store, mixed))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "part_0.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LakeError, match="not a readable parquet file"):
        lake.load(KEY, sha256=store_dataset(store, junk))
    assert not KEY.path(lake.root).exists()


@pytest.mark.parametrize(
    ("crash_at", "survivor"), [("staged", "old"), ("aside", "old"), ("installed", "new")]
)
def test_a_crash_leaves_the_old_or_the_new_partition(
    tmp_path: Path, lake: Lake, store: ContentStore, crash_at: str, survivor: str
) -> None:
    lake.load(KEY, sha256=_dataset(tmp_path, store, "old", [1, 2, 3]))
    new = _dataset(tmp_path, store, "new", [4, 5])
    script = [sys.executable, str(HERE / "crash_install.py"), str(lake.root), str(store.root)]
    proc = subprocess.run([*script, new, "2026-11-23", crash_at], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    dataset_dir = KEY.table.path(lake.root)
    debris = [p.name for p in dataset_dir.iterdir() if p.name.startswith((".tmp", ".old"))]
    assert debris, "the crash should have left its temp or aside dir behind"

    partitions = list_partitions(lake.root, KEY.table)  # a reader recovers first
    expected = [1, 2, 3] if survivor == "old" else [4, 5]
    assert [doc["num_records"] for _p, doc in partitions] == [len(expected)]
    assert _values(KEY.path(lake.root)) == expected
    assert not [p for p in dataset_dir.iterdir() if p.name.startswith(".old")]

    lake.load(KEY, sha256=_dataset(tmp_path, store, "next", [9]))  # the next write cleans up
    assert _values(KEY.path(lake.root)) == [9]
    assert not [p for p in dataset_dir.iterdir() if p.name.startswith((".tmp", ".old"))]


def test_an_exception_between_the_renames_puts_the_old_partition_back(
    tmp_path: Path, lake: Lake, store: ContentStore
) -> None:
    lake.load(KEY, sha256=_dataset(tmp_path, store, "old", [1]))
    new = _dataset(tmp_path, store, "new", [2])

    def fail(step: str) -> None:
        if step == "aside":
            raise OSError("injected")

    with pytest.raises(OSError, match="injected"):
        install_partition(lake.root, store, key=KEY, sha256=new, on_step=fail)
    assert _values(KEY.path(lake.root)) == [1]
    assert not [p for p in KEY.table.path(lake.root).iterdir() if p.name[0] == "." and p.is_dir()]


@pytest.mark.parametrize(
    ("zone", "dataset"),
    [("gold", "../../etc"), ("gold", "a/b"), ("../x", "d"), ("gold", "UPPER"), ("gold", ".hidden")],
)
def test_names_that_could_leave_the_lake_are_refused(zone: str, dataset: str) -> None:
    with pytest.raises(LakeError) as info:
        TableKey(zone, dataset)
    assert info.value.status == 400


def test_an_artifact_missing_from_the_store_is_a_404(lake: Lake) -> None:
    with pytest.raises(LakeError) as info:
        lake.load(KEY, sha256="ab" * 32)
    assert info.value.status == 404 and "upload it first" in str(info.value)
