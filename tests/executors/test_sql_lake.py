"""`uses: sql` over `lake://` sources: partitions loaded into a real data server's lake."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sql_steps
from helpers import TOKEN, finish, pipeline, start
from temporalio.client import Client

from stageflow.lake.client import LakeClient
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

DAYS = {"2024-05-01": 11, "2024-05-02": 12}  # date -> seed of its orders


@pytest.fixture
def lake_server(data_server: tuple[str, ContentStore]) -> str:
    """The data server (it serves a lake): its URL."""
    return data_server[0]


async def _load_days(tmp_path: Path, plane: DataPlane, server_url: str) -> None:
    lake = LakeClient(server_url, TOKEN)
    for date, seed in DAYS.items():
        folder = tmp_path / "loads" / date
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(sql_steps.orders(seed)), folder / "part_0.parquet")
        ref = await plane.push(plane.publish(folder, "orders"), server_url, keep_local=False)
        await lake.load(zone="bronze", dataset="orders", date=date, artifact=ref)


async def test_lake_partitions_and_whole_tables_are_sources(
    client: Client, queue: str, data_plane: DataPlane, lake_server: str, tmp_path: Path
) -> None:
    await _load_days(tmp_path, data_plane, lake_server)
    query = """
        SELECT (SELECT count(*) FROM day) AS day_orders,
               (SELECT CAST(sum(amount) AS BIGINT) FROM every_day) AS total,
               (SELECT count(*) FROM every_day) AS orders
    """
    spec = pipeline(
        {
            "q": {
                "uses": "sql",
                "queue": queue,
                "with": {
                    "query": query,
                    "sources": {
                        "day": "lake://bronze/orders/2024-05-02",
                        "every_day": "lake://bronze/orders",
                    },
                },
            },
            "read": {
                "uses": "python",
                "queue": queue,
                "needs": ["q"],
                "with": {"function": "sql_steps:read_rows", "data": "${q.outputs.artifact}"},
            },
        }
    )
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=lake_server
    ):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    day = sql_steps.orders(DAYS["2024-05-02"])
    every = [o for seed in DAYS.values() for o in sql_steps.orders(seed)]
    expected = [len(day), sum(o["amount"] for o in every), len(every)]
    assert state.stages["read"].outputs["rows"] == [expected]


async def test_a_missing_partition_fails_the_stage_naming_it(
    client: Client, queue: str, data_plane: DataPlane, lake_server: str, tmp_path: Path
) -> None:
    await _load_days(tmp_path, data_plane, lake_server)
    spec = pipeline(
        {
            "q": {
                "uses": "sql",
                "queue": queue,
                "retry": {"max_attempts": 2, "initial_interval": "100ms"},
                "with": {
                    "query": "SELECT count(*) FROM d",
                    "sources": {"d": "lake://bronze/orders/2024-06-01"},
                },
            }
        }
    )
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=lake_server
    ):
        state = await finish(client, await start(client, spec))
    assert state.stages["q"].status == "failed"
    assert state.stages["q"].attempts == 1
    assert "no partition for 2024-06-01" in (state.stages["q"].error or "")
