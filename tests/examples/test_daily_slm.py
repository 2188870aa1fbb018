"""examples/daily_slm.yaml end to end, as a user runs it: `stageflow run` on the embedded default."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from cli_run import REPO, stageflow

from stageflow.executors.parquet_io import dataset_files
from stageflow.spec.validate import load_pipeline
from stageflow.transfer.store import ContentStore

ROWS = 600
MODELS = 7


def _partition(lake: Path, zone: str, dataset: str, date: str) -> Path:
    year, month, day = date.split("-")
    return lake / zone / dataset / year / month / day


def _rows(directory: Path) -> list[dict]:
    return [row for f in dataset_files(directory) for row in pq.read_table(f).to_pylist()]


def test_daily_slm_from_bronze_to_gold(tmp_path: Path) -> None:
    assert load_pipeline(REPO / "examples" / "daily_slm.yaml").schedule == "0 6 * * *"
    home = tmp_path / "home"
    first = json.loads(
        stageflow(
            "run", "examples/daily_slm.yaml", "--json", "-p", f"rows={ROWS}",
            home=home, check=True, timeout=300,
        ).stdout
    )  # fmt: skip
    assert first["status"] == "succeeded", first
    stages = first["stages"]
    date = stages["gold"]["outputs"]["date"]
    lake = home / "lake"

    bronze = _rows(_partition(lake, "bronze", "inputs", date))
    assert len(bronze) == ROWS
    silver = _rows(_partition(lake, "silver", "slm_results", date))
    assert len(silver) == ROWS * MODELS
    assert {row["slm_id"] for row in silver} == set(range(MODELS))

    # The gold table is the per-key mean of silver, computed here independently.
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row in silver:
        acc = sums[row["key"]]
        acc[0] += row["value"]
        acc[1] += row["confidence"]
        acc[2] += 1
    gold_dir = _partition(lake, "gold", "aggregated", date)
    gold = {row["key"]: row for row in _rows(gold_dir)}
    assert set(gold) == set(sums)
    for key, (value, confidence, count) in sums.items():
        assert math.isclose(gold[key]["value"], value / count, abs_tol=1e-9)
        assert math.isclose(gold[key]["confidence"], confidence / count, abs_tol=1e-9)
        assert gold[key]["models"] == MODELS

    schema = json.loads((gold_dir / "_schema.json").read_text())
    assert schema["num_records"] == len(gold)
    assert schema["run_id"] == first["run_id"]
    assert {f["name"] for f in schema["schema"]["fields"]} == {
        "key",
        "value",
        "confidence",
        "models",
    }

    # Staging is cleaned: the data server holds the day's data, the worker keeps none of it.
    staging, server = ContentStore(home / "staging"), ContentStore(home / "server")
    results = [out["results"]["sha256"] for out in stages["slm"]["outputs"]]
    assert len(results) == MODELS
    assert all(server.has(sha) for sha in results)
    assert staging.status().objects == 0
    assert not any((home / "staging" / "inputs").rglob("*.parquet"))
    assert stages["cleanup"]["outputs"]["kept_objects"] == 0

    # The lake is queryable by its catalog name.
    queried = json.loads(
        stageflow(
            "lake", "query", "--json",
            "SELECT count(*) AS n, sum(models) AS m FROM reports.aggregated_results",
            home=home, check=True,
        ).stdout
    )  # fmt: skip
    assert queried["rows"] == [[len(gold), MODELS * len(gold)]]

    # Running the same day again replaces the day's partitions: nothing is duplicated.
    second = json.loads(
        stageflow(
            "run", "examples/daily_slm.yaml", "--json", "-p", f"rows={ROWS}",
            home=home, check=True, timeout=300,
        ).stdout
    )  # fmt: skip
    assert second["status"] == "succeeded"
    assert len(_rows(_partition(lake, "silver", "slm_results", date))) == ROWS * MODELS
    assert {row["key"]: row for row in _rows(gold_dir)} == gold
