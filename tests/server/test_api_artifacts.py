"""Artifacts through the API: catalogued from stage outputs, content served when persisted here."""

from __future__ import annotations

import hashlib

import httpx
from api_helpers import register, start, wait_run
from conftest import Api
from helpers import fn
from temporalio.client import Client

from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker


async def test_persisted_artifact_is_catalogued_and_served(
    api: Api,
    http: httpx.AsyncClient,
    client: Client,
    queue: str,
    unique: str,
    data_plane: DataPlane,
) -> None:
    def blob(persist: bool) -> dict:
        return {
            "uses": "python",
            "queue": queue,
            "persist": persist,
            "with": {"function": fn("write_blob"), "size": 300_000},
        }

    await register(http, unique, {"kept": blob(True), "local": blob(False)})
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane, server_url=api.url):
        run_id = await start(http, unique)
        assert (await wait_run(http, run_id))["status"] == "succeeded"

    stages = (await http.get(f"/api/v1/runs/{run_id}/stages")).json()["stages"]
    kept, local = (stage["artifacts"] for stage in stages)
    assert len(kept) == 1 and kept[0]["locations"] == [api.url]
    sha = kept[0]["sha256"]

    meta = (await http.get(f"/api/v1/artifacts/{sha}")).json()
    assert meta["on_server"] is True and meta["size"] == 300_000 and meta["kind"] == "file"
    assert [(p["run_id"], p["stage"]) for p in meta["produced_by"]] == [(run_id, "kept")]

    content = await http.get(f"/api/v1/artifacts/{sha}/content")
    assert content.status_code == 200 and hashlib.sha256(content.content).hexdigest() == sha
    ranged = await http.get(f"/api/v1/artifacts/{sha}/content", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == content.content[10:20]

    elsewhere = await http.get(f"/api/v1/artifacts/{local[0]['sha256']}/content")
    assert elsewhere.status_code == 404
    assert data_plane.url in elsewhere.json()["error"]  # says where the bytes are


async def test_unknown_and_malformed_hashes(http: httpx.AsyncClient) -> None:
    unknown = await http.get(f"/api/v1/artifacts/{'0' * 64}")
    assert unknown.status_code == 404 and "no artifact" in unknown.json()["error"]
    malformed = await http.get("/api/v1/artifacts/not-a-hash/content")
    assert malformed.status_code == 400
