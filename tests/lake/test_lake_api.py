"""The /v1/lake routes on a real data server over loopback, through LakeClient."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import write_dataset
from helpers import TOKEN

from stageflow.errors import AuthError, LakeError
from stageflow.lake.client import LakeClient
from stageflow.lake.layout import TableKey
from stageflow.lake.writer import list_partitions
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane


async def _upload(plane: DataPlane, server_url: str, directory: Path) -> dict:
    ref = plane.publish(directory)
    return await plane.push(ref, server_url, keep_local=True)


async def test_load_lists_and_serves_partitions_as_artifacts(
    tmp_path: Path, data_server: tuple[str, ContentStore], data_plane: DataPlane
) -> None:
    url, server_store = data_server
    client = LakeClient(url, TOKEN)
    data = write_dataset(
        tmp_path / "d", [{"key": ["a", "b"], "v": [1.5, 2.5]}, {"key": ["c"], "v": [3.0]}]
    )
    ref = await _upload(data_plane, url, data)
    result = await client.load(
        zone="gold",
        dataset="scores",
        date="2026-11-23",
        artifact=ref,
        run_id="run-1",
        job_id="run-1/agg",
        table="prod.scores",
        expected_rows=3,
    )
    assert result["path"] == "gold/scores/2026/11/23" and result["num_records"] == 3

    schema = json.loads((tmp_path / "lake/gold/scores/2026/11/23/_schema.json").read_text())
    assert schema["table_name"] == "prod.scores"
    assert (schema["run_id"], schema["job_id"]) == ("run-1", "run-1/agg")
    assert schema["schema"]["fields"] == [
        {"name": "key", "type": "string"},
        {"name": "v", "type": "double"},
    ]
    catalog = json.loads((tmp_path / "lake/_catalog.json").read_text())
    assert catalog["tables"]["prod.scores"] == {"zone": "gold", "dataset": "scores"}

    tables = await client.tables()
    assert [(t["zone"], t["dataset"], t["num_records"], t["names"]) for t in tables] == [
        ("gold", "scores", 3, ["prod.scores"])
    ]
    table = await client.table("gold", "scores")
    (partition,) = table["partitions"]
    assert partition["artifact"]["locations"] == [url]

    # a partition ref fetches like any artifact: verified, into another store
    reader = ContentStore(tmp_path / "reader")
    other = DataPlane(store=reader, token=TOKEN)
    await other.fetch(partition["artifact"])
    placed = reader.materialize(partition["artifact"]["sha256"], "dir", tmp_path / "got")
    got = sorted(placed.glob("*.parquet"))
    assert sum(pq.read_table(f).num_rows for f in got) == 3
    # even after the server's store lost the objects (gc), the lake re-links them
    for item in partition["files"]:
        server_store.remove(item["sha256"])
    server_store.remove(partition["artifact"]["sha256"])
    table = await client.table("gold", "scores")
    assert all(server_store.has(f["sha256"]) for f in table["partitions"][0]["files"])

    answer = await client.query("SELECT key, v FROM prod.scores ORDER BY key", limit=2)
    assert answer["columns"] == ["key", "v"]
    assert answer["rows"] == [["a", 1.5], ["b", 2.5]] and answer["truncated"] is True


async def test_a_failed_row_count_check_is_a_clear_422(
    tmp_path: Path, data_server: tuple[str, ContentStore], data_plane: DataPlane
) -> None:
    url, _store = data_server
    ref = await _upload(data_plane, url, write_dataset(tmp_path / "d", [{"v": [1, 2]}]))
    with pytest.raises(LakeError, match="holds 2 rows, 5 were expected") as info:
        await LakeClient(url, TOKEN).load(
            zone="silver", dataset="x", date="2026-01-02", artifact=ref, expected_rows=5
        )
    assert info.value.status == 422
    assert list_partitions(tmp_path / "lake", TableKey("silver", "x")) == []


@pytest.mark.parametrize(
    ("zone", "dataset", "date"),
    [
        ("gold", "../../etc", "2026-01-02"),
        ("..", "x", "2026-01-02"),
        ("gold", "x", "2026-01-02/../../../x"),
        ("gold", "x", "2026-02-30"),
    ],
)
async def test_traversal_and_bad_names_are_4xx_and_write_nothing(
    tmp_path: Path, data_server: tuple[str, ContentStore], zone: str, dataset: str, date: str
) -> None:
    url, store = data_server
    sha = store.put_dir(write_dataset(tmp_path / "d", [{"v": [1]}])).sha256
    body = {"zone": zone, "dataset": dataset, "date": date, "artifact": {"sha256": sha}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        response = await http.post("/v1/lake/load", json=body)
        assert response.status_code == 400, response.text
        assert "error" in response.json()
        response = await http.get(f"/v1/lake/tables/{zone}/{dataset}")
        assert 400 <= response.status_code < 500
    lake = tmp_path / "lake"
    assert [p for p in lake.rglob("*.parquet")] == []
    assert not (tmp_path / "etc").exists()


async def test_lake_routes_need_the_token(data_server: tuple[str, ContentStore]) -> None:
    url, _store = data_server
    async with httpx.AsyncClient(base_url=url) as http:
        for method, path in [
            ("GET", "/v1/lake/tables"),
            ("POST", "/v1/lake/query"),
            ("POST", "/v1/lake/load"),
            ("GET", "/v1/lake/tables/gold/x"),
        ]:
            assert (await http.request(method, path)).status_code == 401
            wrong = {"Authorization": "Bearer " + "w" * 32}
            assert (await http.request(method, path, headers=wrong)).status_code == 403
    with pytest.raises(AuthError):
        await LakeClient(url, "w" * 32).tables()


async def test_a_named_table_cannot_be_repointed(
    tmp_path: Path, data_server: tuple[str, ContentStore], data_plane: DataPlane
) -> None:
    url, _store = data_server
    client = LakeClient(url, TOKEN)
    ref = await _upload(data_plane, url, write_dataset(tmp_path / "d", [{"v": [1]}]))
    await client.load(zone="gold", dataset="a", date="2026-01-02", artifact=ref, table="prod.t")
    with pytest.raises(LakeError, match="already names gold/a") as info:
        await client.load(zone="gold", dataset="b", date="2026-01-02", artifact=ref, table="prod.t")
    assert info.value.status == 409
    assert not (tmp_path / "lake/gold/b/2026").exists()
