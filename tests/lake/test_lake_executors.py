"""`aggregate` and `load` in real pipelines on the dev server, with a real data server."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import finish, pipeline, start
from lake_stage_functions import KEYS, shard_rows
from temporalio.client import Client

from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

MOD = "lake_stage_functions"
ROWS = 200


async def test_a_matrix_fans_in_to_an_aggregated_gold_table(
    client: Client,
    queue: str,
    tmp_path: Path,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
) -> None:
    server_url, _store = data_server
    spec = pipeline(
        {
            "produce": {
                "uses": "python",
                "queue": queue,
                "matrix": {"shard": [0, 1, 2]},
                "with": {"function": f"{MOD}:produce", "shard": "${matrix.shard}", "rows": ROWS},
            },
            "aggregate": {
                "uses": "aggregate",
                "queue": queue,
                "needs": ["produce"],
                "with": {
                    "inputs": "${produce.outputs.data}",
                    "group_by": ["key"],
                    "aggregations": {
                        "value": "mean(value)",
                        "confidence": "mean(confidence)",
                        "n": "count(*)",
                    },
                    "zone": "gold",
                    "dataset": "aggregated",
                    "table": "prod.aggregated_results",
                    "date": "2026-11-23",
                },
            },
            "read": {
                "uses": "python",
                "queue": queue,
                "needs": ["aggregate"],
                "with": {
                    "function": f"{MOD}:read_lake",
                    "url": "lake://gold/aggregated/2026-11-23",
                },
            },
        }
    )
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=server_url
    ):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}

    # the expected aggregate, computed here in plain Python from the same generated rows
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for shard in range(3):
        rows = shard_rows(shard, ROWS)
        for key, value, conf in zip(rows["key"], rows["value"], rows["confidence"], strict=True):
            groups[key].append((value, conf))
    partition = tmp_path / "lake/gold/aggregated/2026/11/23"
    got = pq.read_table(sorted(partition.glob("part_*.parquet"))).to_pylist()
    assert [r["key"] for r in got] == sorted(k for k in KEYS if k in groups)
    for row in got:
        members = groups[row["key"]]
        assert row["n"] == len(members)
        assert row["value"] == pytest.approx(sum(v for v, _ in members) / len(members))
        assert row["confidence"] == pytest.approx(sum(c for _, c in members) / len(members))

    out = state.stages["aggregate"].outputs
    assert out["rows"] == len(groups) and out["table"] == "prod.aggregated_results"
    assert out["path"] == "gold/aggregated/2026/11/23"
    names = [f["name"] for f in out["fields"]]
    assert names[0] == "key" and sorted(names[1:]) == ["confidence", "n", "value"]
    assert out["artifact"]["locations"] == [server_url]
    assert (partition / "_schema.json").is_file()
    # a downstream stage reads the table back from the lake as a verified artifact
    assert state.stages["read"].outputs == {"rows": len(groups), "files": 1}


async def test_load_checks_the_row_count(
    client: Client,
    queue: str,
    tmp_path: Path,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
) -> None:
    server_url, _store = data_server

    def load(**with_: object) -> dict:
        return {"uses": "load", "queue": queue, "needs": ["produce"], "with": with_}

    spec = pipeline(
        {
            "produce": {
                "uses": "python",
                "queue": queue,
                "with": {"function": f"{MOD}:produce", "shard": 7, "rows": 50},
            },
            "good": load(
                data="${produce.outputs.data}",
                table="prod.campaign_scores",
                zone="silver",
                date="2026-11-23",
            ),
            "bad": load(
                data="${produce.outputs.data}",
                zone="silver",
                dataset="checked",
                date="2026-11-23",
                expected_rows=49,
            ),
        }
    )
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=server_url
    ):
        state = await finish(client, await start(client, spec))
    good = state.stages["good"]
    assert good.status == "succeeded", good.error
    assert good.outputs["rows"] == 50 and good.outputs["files"] == 2
    assert good.outputs["table"] == "prod.campaign_scores"
    assert good.outputs["path"] == "silver/campaign_scores/2026/11/23"
    files = sorted((tmp_path / "lake/silver/campaign_scores/2026/11/23").glob("*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == 50

    bad = state.stages["bad"]
    assert bad.status == "failed"
    assert "row count check failed" in str(bad.error) and "50 rows, 49 were expected" in str(
        bad.error
    )
    assert not (tmp_path / "lake/silver/checked/2026").exists()
