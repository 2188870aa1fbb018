"""examples/daily_slm.yaml on four hosts gives the same lake as on one machine.

worker1 serves `default` (ingest, load, sql, aggregate, cleanup and the workflow), worker2
serves `ml` (the seven model instances); the lake is on the dataserver. The same pipeline, with
the same params, run id and date, then runs single-host with `stageflow run` on the embedded
default, and both lakes must hold the same silver and gold rows and schemas.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from cli_run import stageflow
from helpers import finish
from hosts_helpers import partition, schema_summary, sorted_rows, submit
from temporalio.client import Client

from stageflow.testing.services import Services

pytestmark = pytest.mark.hosts

ROWS = "600"


async def test_daily_slm_on_hosts_matches_one_machine(services: Services, tmp_path: Path) -> None:
    run_id = f"daily-slm-hosts-{uuid.uuid4().hex[:8]}"
    params = {"rows": ROWS}
    submit(services, "examples/daily_slm.yaml", run_id, params, tmp_path / "laptop")
    single = await asyncio.to_thread(
        stageflow,
        "run", "examples/daily_slm.yaml", "--json", "--run-id", run_id, "-p", f"rows={ROWS}",
        home=tmp_path / "single", check=True, timeout=200,
    )  # fmt: skip
    one = json.loads(single.stdout)
    assert one["status"] == "succeeded", one

    client = await Client.connect(services.temporal_address)
    final = await finish(client, run_id, timeout=200)
    assert final.status == "succeeded", {n: s.error for n, s in final.stages.items()}

    # The stages really ran on both worker hosts, and data crossed the network between them.
    assert final.stages["prep"].worker == "worker1"
    scored = services.workers["worker2"].log.read_text()  # matrix stages name no single worker
    assert all(f"SLM {i} scoring" in scored for i in range(7))
    assert "scoring" not in services.workers["worker1"].log.read_text()
    worker1_url = services.workers["worker1"].endpoint
    assert worker1_url in final.stages["prep"].outputs["artifact"]["locations"]
    for instance in final.stages["slm"].outputs:
        assert services.server_url in instance["results"]["locations"]

    date = final.stages["gold"].outputs["date"]
    assert one["stages"]["gold"]["outputs"]["date"] == date, "the runs straddled midnight (UTC)"
    lake = services.server.host.data_dir / "lake"
    single_lake = tmp_path / "single" / "lake"
    for zone, dataset in (("bronze", "inputs"), ("silver", "slm_results"), ("gold", "aggregated")):
        on_hosts = partition(lake, zone, dataset, date)
        alone = partition(single_lake, zone, dataset, date)
        rows = sorted_rows(on_hosts)
        assert rows, f"{zone}/{dataset} is empty on the hosts"
        assert rows == sorted_rows(alone), f"{zone}/{dataset} differs"
        assert schema_summary(on_hosts) == schema_summary(alone)
    gold = sorted_rows(partition(lake, "gold", "aggregated", date))
    assert all(row["models"] == 7 for row in gold)
