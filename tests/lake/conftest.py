"""Lake test helpers: parquet datasets, storing them, a lake over a real store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stageflow.lake.service import Lake
from stageflow.transfer.store import ContentStore

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # so the python executor can import lake_stage_functions
    sys.path.insert(0, HERE)


def write_dataset(directory: Path, parts: list[dict[str, list[Any]]]) -> Path:
    """``part_i.parquet`` per dict of columns; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, columns in enumerate(parts):
        pq.write_table(pa.table(columns), directory / f"part_{i}.parquet", compression="zstd")
    return directory


def store_dataset(store: ContentStore, directory: Path) -> str:
    """Put a dataset dir into ``store`` (as an upload would); returns its manifest sha."""
    return store.put_dir(directory).sha256


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "server")


@pytest.fixture
def lake(tmp_path: Path, store: ContentStore) -> Lake:
    return Lake(tmp_path / "lake", store)
