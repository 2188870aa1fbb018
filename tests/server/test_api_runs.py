"""Runs through the API: start with params, list and page, show, approve, pause, cancel, retry."""

from __future__ import annotations

from pathlib import Path

import httpx
from api_helpers import register, start, wait_run, wait_stage
from helpers import fn, wait_until
from steps import read_log
from temporalio.client import Client

from stageflow.worker.runner import StageWorker


def step(queue: str, function: str, needs: list[str] | None = None, **params: object) -> dict:
    return {
        "uses": "python",
        "queue": queue,
        "needs": needs or [],
        "with": {"function": fn(function), **params},
    }


async def test_start_with_params_and_read_outputs(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str
) -> None:
    mul = step(queue, "multiply", ["make"], x="${matrix.x}", y=10)
    mul["matrix"] = {"x": "${make.outputs.numbers}"}
    await register(
        http,
        unique,
        {
            "make": step(queue, "numbers", count="${params.n}"),
            "mul": mul,
            "sum": step(queue, "total", ["mul"], values="${mul.outputs.value}"),
        },
        params={"n": 2},
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique, params={"n": 3})
        assert run_id.startswith(f"{unique}-")
        run = await wait_run(http, run_id)
    assert run["status"] == "succeeded" and run["params"] == {"n": 3}
    assert run["source"] == "temporal" and list(run["stages"]) == ["make", "mul", "sum"]

    answer = await http.get(f"/api/v1/runs/{run_id}/stages")
    assert answer.status_code == 200, answer.text
    stages = answer.json()
    by_name = {stage["name"]: stage for stage in stages["stages"]}
    assert by_name["make"]["outputs"] == {"numbers": [1, 2, 3]}
    assert [out["value"] for out in by_name["mul"]["outputs"]] == [10, 20, 30]
    assert by_name["mul"]["instances"] == by_name["mul"]["instances_done"] == 3
    assert by_name["sum"]["outputs"]["total"] == 60
    assert by_name["sum"]["attempts"] == 1 and by_name["sum"]["duration_s"] >= 0
    assert by_name["sum"]["task_queue"] == queue and by_name["sum"]["progress"] == []


async def test_start_refuses_bad_requests(
    http: httpx.AsyncClient, client: Client, unique: str
) -> None:
    await register(http, unique, {"a": step("nowhere", "whoami")}, params={"n": 1})
    unknown_param = await http.post(f"/api/v1/pipelines/{unique}/runs", json={"params": {"m": 1}})
    assert unknown_param.status_code == 422
    assert "unknown param(s) m" in unknown_param.json()["error"]
    missing = await http.post("/api/v1/pipelines/nope-nope/runs", json={})
    assert missing.status_code == 404
    async with StageWorker(client, task_queues=[]):  # the workflow only; no stage runs
        run_id = await start(http, unique, run_id=f"{unique}-fixed")
        assert run_id == f"{unique}-fixed"
        again = await http.post(f"/api/v1/pipelines/{unique}/runs", json={"run_id": run_id})
        assert again.status_code == 409 and "exists" in again.json()["error"]
        assert (await http.post(f"/api/v1/runs/{run_id}/cancel")).status_code == 200
        assert (await wait_run(http, run_id))["status"] == "cancelled"
    assert (await http.get("/api/v1/runs/no-such-run")).status_code == 404
    for action in ("cancel", "pause", "resume", "retry"):
        answer = await http.post(f"/api/v1/runs/no-such-run/{action}")
        assert answer.status_code == 404, (action, answer.text)


async def test_list_filter_and_page(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str
) -> None:
    other = f"{unique}-other"
    await register(http, unique, {"a": step(queue, "whoami")})
    await register(http, other, {"a": step(queue, "whoami")})
    async with StageWorker(client, task_queues=[queue]):
        mine = [await start(http, unique) for _ in range(3)]
        theirs = await start(http, other)
        for run_id in [*mine, theirs]:
            await wait_run(http, run_id)

    page1 = (await http.get("/api/v1/runs", params={"pipeline": unique, "limit": 2})).json()
    assert len(page1["runs"]) == 2 and page1["next_cursor"]
    page2 = (
        await http.get(
            "/api/v1/runs", params={"pipeline": unique, "limit": 2, "cursor": page1["next_cursor"]}
        )
    ).json()
    assert len(page2["runs"]) == 1 and page2["next_cursor"] is None
    paged = [run["run_id"] for run in page1["runs"] + page2["runs"]]
    assert sorted(paged) == sorted(mine)  # every run once, newest first
    assert paged == sorted(paged, key=lambda r: mine.index(r), reverse=True)

    done = await http.get("/api/v1/runs", params={"pipeline": unique, "status": "succeeded"})
    assert {run["run_id"] for run in done.json()["runs"]} == set(mine)
    failed = await http.get("/api/v1/runs", params={"pipeline": unique, "status": "failed"})
    assert failed.json()["runs"] == []
    bad = await http.get("/api/v1/runs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


async def test_approve_a_gated_stage(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str, log_dir: Path
) -> None:
    ship = step(queue, "timed", ["prep"], log_dir=str(log_dir), name="ship")
    ship["gate"] = "approve"
    await register(http, unique, {"prep": step(queue, "whoami"), "ship": ship})
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        await wait_stage(http, run_id, "ship", "waiting_approval")
        assert read_log(log_dir, "ship") == []
        wrong = await http.post(f"/api/v1/runs/{run_id}/approve", json={"stage": "nope"})
        assert wrong.status_code == 404 and "no stage 'nope'" in wrong.json()["error"]
        approved = await http.post(f"/api/v1/runs/{run_id}/approve", json={"stage": "ship"})
        assert approved.json() == {"run_id": run_id, "action": "approve", "accepted": True}
        run = await wait_run(http, run_id)
    assert run["status"] == "succeeded"
    assert len(read_log(log_dir, "ship")) == 1


async def test_pause_and_resume(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str, log_dir: Path
) -> None:
    await register(
        http,
        unique,
        {
            "first": step(queue, "timed", log_dir=str(log_dir), name="first", seconds=1.0),
            "second": step(queue, "timed", ["first"], log_dir=str(log_dir), name="second"),
        },
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        await wait_stage(http, run_id, "first", "running")
        assert (await http.post(f"/api/v1/runs/{run_id}/pause")).status_code == 200
        await wait_stage(http, run_id, "first", "succeeded")
        run = (await http.get(f"/api/v1/runs/{run_id}")).json()
        assert run["status"] == "paused" and run["paused"] is True
        assert run["stages"]["second"]["status"] == "pending"
        listed = (await http.get("/api/v1/runs", params={"pipeline": unique})).json()["runs"]
        assert [r["status"] for r in listed] == ["paused"]
        assert (await http.post(f"/api/v1/runs/{run_id}/resume")).status_code == 200
        run = await wait_run(http, run_id)
    assert run["status"] == "succeeded"
    assert read_log(log_dir, "second")[0]["start"] >= read_log(log_dir, "first")[0]["end"]


async def test_signal_endpoint(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str, log_dir: Path
) -> None:
    await register(
        http,
        unique,
        {
            "first": step(queue, "timed", log_dir=str(log_dir), name="first", seconds=0.5),
            "second": step(queue, "timed", ["first"], log_dir=str(log_dir), name="second"),
        },
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        unknown = await http.post(f"/api/v1/runs/{run_id}/signal/explode", json={})
        assert unknown.status_code == 404 and "approve, pause, resume" in unknown.json()["error"]
        paused = await http.post(f"/api/v1/runs/{run_id}/signal/pause", json={})
        assert paused.json()["action"] == "signal:pause"
        await wait_stage(http, run_id, "first", "succeeded")
        assert (await http.get(f"/api/v1/runs/{run_id}")).json()["status"] == "paused"
        await http.post(f"/api/v1/runs/{run_id}/signal/resume", json={"payload": None})
        assert (await wait_run(http, run_id))["status"] == "succeeded"


async def test_cancel_stops_the_run(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str, log_dir: Path
) -> None:
    await register(
        http,
        unique,
        {"long": step(queue, "wait_for_cancel", log_dir=str(log_dir))},
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        await wait_until(lambda: read_log(log_dir, "wait_for_cancel"))
        answer = await http.post(f"/api/v1/runs/{run_id}/cancel")
        assert answer.status_code == 200
        run = await wait_run(http, run_id)
    assert run["status"] == "cancelled"
    listed = (await http.get("/api/v1/runs", params={"pipeline": unique})).json()["runs"]
    assert listed[0]["status"] == "cancelled" and listed[0]["finished_at"]


async def test_retry_a_failed_run(
    http: httpx.AsyncClient, client: Client, queue: str, unique: str, log_dir: Path
) -> None:
    flag = log_dir / "broken"
    flag.touch()
    fragile = step(queue, "fail_while_flag", ["first"], log_dir=str(log_dir), name="fragile")
    fragile["with"]["flag"] = str(flag)
    fragile["retry"] = {"max_attempts": 1}
    never = str(log_dir / "never")
    await register(
        http,
        unique,
        {
            "first": step(queue, "fail_while_flag", log_dir=str(log_dir), name="first", flag=never),
            "fragile": fragile,
        },
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(http, unique)
        run = await wait_run(http, run_id)
        assert run["status"] == "failed"
        assert "exists" in run["stages"]["fragile"]["error"]
        flag.unlink()
        answer = await http.post(f"/api/v1/runs/{run_id}/retry")
        assert answer.status_code == 200, answer.text
        run = await wait_run(http, run_id, "succeeded", "failed")
        again = await http.post(f"/api/v1/runs/{run_id}/retry")
    assert run["status"] == "succeeded"
    assert again.status_code == 409 and "nothing to retry" in again.json()["error"]
    assert len(read_log(log_dir, "first")) == 1 and len(read_log(log_dir, "fragile")) == 2
    stages = (await http.get(f"/api/v1/runs/{run_id}/stages")).json()["stages"]
    assert [s["reused"] for s in stages] == [True, False]
