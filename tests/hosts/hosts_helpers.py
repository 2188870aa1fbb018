"""Reading two lakes the same way, and submitting a pipeline to the hosts' Temporal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from cli_run import REPO, TESTS

from stageflow.executors.parquet_io import dataset_files
from stageflow.testing.services import Services


def partition(lake: Path, zone: str, dataset: str, date: str) -> Path:
    year, month, day = date.split("-")
    return lake / zone / dataset / year / month / day


def sorted_rows(directory: Path) -> list[dict[str, Any]]:
    """Every row of a partition, in a canonical order (part files may split rows differently)."""
    rows = [row for f in dataset_files(directory) for row in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))


def schema_summary(directory: Path) -> dict[str, Any]:
    """What must agree between two loads of the same data: fields, types and the row count."""
    schema = json.loads((directory / "_schema.json").read_text())
    return {"fields": schema["schema"]["fields"], "num_records": schema["num_records"]}


def submit(services: Services, spec: str, run_id: str, params: dict[str, str], home: Path) -> None:
    """``stageflow run SPEC --detach`` against the dataserver's Temporal, as a user's laptop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STAGEFLOW_"))}
    env.update(
        TEMPORAL_ADDRESS=services.temporal_address,
        STAGEFLOW_HOME=str(home),
        STAGEFLOW_TOKEN=services.token,
        PYTHONPATH=str(TESTS),
    )
    args = [arg for key, value in params.items() for arg in ("-p", f"{key}={value}")]
    argv = [sys.executable, "-m", "stageflow", "run", spec, "--detach", "--run-id", run_id, *args]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
