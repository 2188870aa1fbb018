"""Tokens: 401 without one, 403 with a wrong one, read-only may GET only; health is open."""

from __future__ import annotations

import httpx
from conftest import ADMIN, READ, Api


async def test_missing_and_wrong_tokens(api: Api) -> None:
    async with api.client(token=None) as anonymous:
        missing = await anonymous.get("/api/v1/runs")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["error"]
        basic = await anonymous.get("/api/v1/runs", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert (await anonymous.get("/metrics")).status_code == 401
    async with api.client(token="not-the-token-at-all") as wrong:
        answer = await wrong.get("/api/v1/workers")
        assert answer.status_code == 403 and "wrong token" in answer.json()["error"]
        assert (await wrong.post("/api/v1/events", json={"events": []})).status_code == 403


async def test_read_only_token_reads_but_cannot_change(api: Api, unique: str) -> None:
    async with api.client(token=READ) as reader:
        assert (await reader.get("/api/v1/pipelines")).status_code == 200
        assert (await reader.get("/metrics")).status_code == 200
        refused = await reader.post(
            "/api/v1/workers/register", json={"worker_id": unique, "host": "h"}
        )
        assert refused.status_code == 403
        assert "read-only token cannot POST" in refused.json()["error"]
    async with api.client(token=ADMIN) as admin:
        allowed = await admin.post(
            "/api/v1/workers/register", json={"worker_id": unique, "host": "h"}
        )
        assert allowed.status_code == 200


async def test_health_and_docs_are_open(api: Api) -> None:
    async with api.client(token=None) as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        ready = await anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "database": "ok",
            "temporal": "ok",
            "error": None,
        }
        schema = (await anonymous.get("/openapi.json")).json()
        assert "/api/v1/runs/{run_id}/stages" in schema["paths"]
        assert (await anonymous.get("/docs")).status_code == 200


async def test_errors_are_json_everywhere(http: httpx.AsyncClient) -> None:
    unknown = await http.get("/api/v1/nowhere")
    assert unknown.status_code == 404 and "see /docs" in unknown.json()["error"]
    wrong_method = await http.delete("/api/v1/pipelines")
    assert wrong_method.status_code == 405 and "DELETE" in wrong_method.json()["error"]
    not_json = await http.post(
        "/api/v1/events", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422 and not_json.json()["error"].startswith("invalid request")
    nul = await http.post("/api/v1/workers/register", json={"worker_id": "a\x00b", "host": "h"})
    assert nul.status_code == 422 and "NUL" in nul.json()["error"]
