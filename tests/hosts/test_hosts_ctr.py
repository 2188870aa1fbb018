"""examples/ctr_train_infer.yaml on four hosts gives the same lake table as on one machine.

The `source` host ("Server 21") runs only sshd, with examples/duckdb_cli.py as its SQL client;
its staging dir exists only there. worker1 (`default`) moves data to and from it over SSH and
loads the lake; worker2 (`ml`) trains and infers, fetching its inputs from worker1 over HTTP.
The single-host run uses a loopback sshd (tests/transfer/sshd.py), the same params and run id.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest
from cli_run import REPO, stageflow
from helpers import finish
from hosts_helpers import partition, schema_summary, sorted_rows, submit
from temporalio.client import Client
from transfer.sshd import (
    SshServer,
    sshd_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)

from stageflow.testing.hosts import Cluster
from stageflow.testing.services import Services

pytestmark = pytest.mark.hosts

ROWS, INFER = 4000, 1000


def _params(source_host: str, source_dir: Path) -> dict[str, str]:
    return {
        "source_host": source_host,
        "source_dir": str(source_dir),
        "source_sql": f"{sys.executable} {REPO / 'examples' / 'duckdb_cli.py'}",
        "rows": str(ROWS),
        "infer_share": str(INFER / ROWS),
        "epochs": "2",
    }


async def test_ctr_on_hosts_matches_one_machine(
    cluster: Cluster, services: Services, sshd: SshServer, tmp_path: Path
) -> None:
    run_id = f"ctr-hosts-{uuid.uuid4().hex[:8]}"
    source_dir = cluster["source"].data_dir / "server21"
    submit(services, "examples/ctr_train_infer.yaml", run_id,
           _params(services.ssh_url, source_dir), tmp_path / "laptop")  # fmt: skip

    single_params = _params(f"ssh://{sshd.user}@{sshd.host}:{sshd.port}", sshd.scratch / "s21")
    args = [arg for key, value in single_params.items() for arg in ("-p", f"{key}={value}")]
    env = {
        "STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE": str(sshd.client_key),
        "STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
    }
    single = await asyncio.to_thread(
        stageflow,
        "run", "examples/ctr_train_infer.yaml", "--json", "--run-id", run_id, *args,
        home=tmp_path / "single", env=env, check=True, timeout=300,
    )  # fmt: skip
    one = json.loads(single.stdout)
    assert one["status"] == "succeeded", one

    client = await Client.connect(services.temporal_address)
    final = await finish(client, run_id, timeout=300)
    assert final.status == "succeeded", {n: s.error for n, s in final.stages.items()}

    # Where each stage ran, and what crossed the network.
    stages = final.stages
    assert {stages[s].worker for s in ("train", "infer")} == {"worker2"}
    assert {stages[s].worker for s in ("export_samples", "ship_back", "load")} == {"worker1"}
    worker1_url = services.workers["worker1"].endpoint
    assert worker1_url in stages["export_samples"].outputs["artifact"]["locations"]
    assert (
        services.workers["worker2"].endpoint in stages["infer"].outputs["predictions"]["locations"]
    )
    # The scores went back to the source host, whose files no worker can see.
    results = source_dir / "results" / run_id
    assert sorted(p.name for p in results.rglob("*.parquet"))
    assert cluster["worker1"].run(["ls", str(source_dir)], check=False).returncode != 0

    # Training on worker2 gave the same epochs as on one machine (timings and worker aside) ...
    def learned(history: list[dict]) -> list[dict]:
        return [{k: e[k] for k in ("epoch", "rows", "loss", "auc", "auc_tasks")} for e in history]

    assert learned(stages["train"].outputs["history"]) == learned(
        one["stages"]["train"]["outputs"]["history"]
    )
    # ... and the lake table holds the same scores.
    date = stages["load"].outputs["date"]
    assert one["stages"]["load"]["outputs"]["date"] == date, "the runs straddled midnight (UTC)"
    on_hosts = partition(services.server.host.data_dir / "lake", "gold", "campaign_scores", date)
    alone = partition(tmp_path / "single" / "lake", "gold", "campaign_scores", date)
    rows = sorted_rows(on_hosts)
    assert len(rows) == INFER
    assert rows == sorted_rows(alone)
    assert schema_summary(on_hosts) == schema_summary(alone)
