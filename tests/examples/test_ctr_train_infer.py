"""examples/ctr_train_infer.yaml end to end with `stageflow run` on the embedded default.

The data-source host is a real sshd on loopback whose SQL client is examples/duckdb_cli.py;
nothing of ours runs "there" but that client. (Killing the training worker mid-epoch and
resuming from the last epoch on another worker is shown in tests/executors/test_train.py.)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq
from cli_run import REPO, stageflow
from transfer.sshd import (
    SshServer,
    sshd_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)

from stageflow.executors.parquet_io import dataset_files
from stageflow.transfer.store import ContentStore

EXAMPLES = REPO / "examples"
ROWS, INFER = 6000, 1500


def _ids(directory: Path) -> list[int]:
    return sorted(
        i for f in dataset_files(directory) for i in pq.read_table(f)["request_id"].to_pylist()
    )


def test_ctr_train_infer_over_ssh_into_the_lake(tmp_path: Path, sshd: SshServer) -> None:
    home, source_dir = tmp_path / "home", sshd.scratch / "server21"
    env = {
        "STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE": str(sshd.client_key),
        "STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
    }
    params = {
        "source_host": f"ssh://{sshd.user}@{sshd.host}:{sshd.port}",
        "source_dir": str(source_dir),
        "source_sql": f"{sys.executable} {EXAMPLES / 'duckdb_cli.py'}",
        "rows": str(ROWS),
        "infer_share": str(INFER / ROWS),
        "epochs": "2",
    }
    args = [arg for key, value in params.items() for arg in ("-p", f"{key}={value}")]
    result = stageflow(
        "run", "examples/ctr_train_infer.yaml", "--json", *args,
        home=home, env=env, check=True, timeout=400,
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["status"] == "succeeded", document
    stages = document["stages"]

    # The exports came from the source host and were removed there once pulled.
    assert stages["export_samples"]["outputs"]["rows"] == ROWS - INFER
    assert stages["export_inference"]["outputs"]["rows"] == INFER
    assert not any((source_dir / "exports").glob("stageflow-*"))

    report = stages["report"]["outputs"]
    assert [epoch["epoch"] for epoch in report["epochs"]] == [0, 1]
    assert all(math.isfinite(epoch["loss"]) and epoch["auc"] > 0.5 for epoch in report["epochs"])
    assert report["inference"]["rows"] == INFER and report["inference"]["rows_per_s"] > 0
    assert report["bytes_moved"] > 0

    # The scores went back to the source host: one per inference row, nothing lost or doubled.
    expected_ids = list(range(ROWS - INFER, ROWS))
    assert _ids(source_dir / "results" / document["run_id"]) == expected_ids

    # ... and into the lake table, whose row count was checked on load.
    year, month, day = report["table"]["date"].split("-")
    partition = home / "lake" / "gold" / "campaign_scores" / year / month / day
    assert _ids(partition) == expected_ids
    queried = json.loads(
        stageflow(
            "lake", "query", "--json", "SELECT count(*) FROM prod.campaign_scores",
            home=home, check=True,
        ).stdout
    )  # fmt: skip
    assert queried["rows"] == [[INFER]]

    # The report JSON is held by the data server; the worker's staging is empty again.
    assert ContentStore(home / "server").has(report["report"]["sha256"])
    assert ContentStore(home / "staging").status().objects == 0
