"""Registering, listing and showing pipelines through the API."""

from __future__ import annotations

import httpx
from helpers import fn


def spec(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "params": {"n": 2},
        "stages": {"make": {"uses": "python", "with": {"function": fn("numbers"), "count": 1}}},
        **extra,
    }


async def test_register_list_show_and_replace(http: httpx.AsyncClient, unique: str) -> None:
    created = await http.post("/api/v1/pipelines", json=spec(unique))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == unique and body["stages"] == ["make"] and body["params"] == {"n": 2}

    listed = (await http.get("/api/v1/pipelines")).json()["pipelines"]
    assert unique in [p["name"] for p in listed]

    replaced = await http.post("/api/v1/pipelines", json=spec(unique, params={"n": 5}))
    assert replaced.status_code == 200
    shown = (await http.get(f"/api/v1/pipelines/{unique}")).json()
    assert shown["params"] == {"n": 5}
    assert shown["created_at"] == body["created_at"] and shown["updated_at"] >= body["updated_at"]


async def test_yaml_body_is_accepted(http: httpx.AsyncClient, unique: str) -> None:
    text = f"""name: {unique}
stages:
  hello:
    uses: shell
    with: {{command: "echo hi"}}
"""
    answer = await http.post(
        "/api/v1/pipelines", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["spec"]["stages"]["hello"]["with"] == {"command": "echo hi"}


async def test_invalid_spec_is_422_with_line_and_field(
    http: httpx.AsyncClient, unique: str
) -> None:
    text = f"""name: {unique}
stages:
  a:
    uses: python
    with: {{function: "m:f"}}
  b:
    uses: python
    needs: [nowhere]
    with: {{function: "m:f", x: "${{a.outputs.y}}"}}
"""
    answer = await http.post("/api/v1/pipelines", content=text)
    assert answer.status_code == 422
    body = answer.json()
    assert "invalid pipeline spec" in body["error"]
    by_field = {issue["field"]: issue for issue in body["issues"]}
    assert by_field["stages.b.needs.0"]["line"] == 8
    assert "unknown stage 'nowhere'" in by_field["stages.b.needs.0"]["message"]
    assert any("does not need it" in issue["message"] for issue in body["issues"])
    assert (await http.get(f"/api/v1/pipelines/{unique}")).status_code == 404


async def test_malformed_bodies_are_clear_errors(http: httpx.AsyncClient) -> None:
    for content in (b"", b"\xff\xfe", b"[1, 2]", b"name: [unclosed"):
        answer = await http.post("/api/v1/pipelines", content=content)
        assert answer.status_code == 422, (content, answer.text)
        assert answer.json()["error"]


async def test_unknown_pipeline_is_404(http: httpx.AsyncClient, unique: str) -> None:
    answer = await http.get(f"/api/v1/pipelines/{unique}")
    assert answer.status_code == 404
    assert "register it" in answer.json()["error"]
