"""`stageflow logs` and `stageflow workers` as users run them, against a real HTTP control plane."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from control_plane import FakeControlPlane
from helpers import TOKEN, wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def control() -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane(TOKEN)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STAGEFLOW_"))}
    return {
        **base,
        "STAGEFLOW_HOME": str(tmp_path / "home"),
        "STAGEFLOW_TOKEN": TOKEN,
        "COLUMNS": "250",
        **extra,
    }


async def stageflow(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command in a thread: the control plane lives on this test's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stageflow", *args],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def post_lines(url: str, worker: str, lines: list[dict[str, Any]], first_seq: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        for start in range(0, len(lines), 1000):
            batch = [
                {"seq": first_seq + start + i, "level": "INFO", "stream": "stdout", **line}
                for i, line in enumerate(lines[start : start + 1000])
            ]
            answer = await client.post(
                "/api/v1/logs", json={"worker": worker, "stream_id": "s1", "lines": batch}
            )
            answer.raise_for_status()


def line(run_id: str, stage: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "stage": stage,
        "instance": None,
        "attempt": 1,
        "at": "2026-01-02T03:04:05+00:00",
        "message": message,
        **extra,
    }


async def test_logs_pages_through_every_line_and_filters_by_stage(
    control: FakeControlPlane, tmp_path: Path
) -> None:
    lines = [line("r1", "ab"[i % 2], f"m{i}") for i in range(2500)]
    lines.append(line("other-run", "a", "not mine"))
    lines.append(line("r1", "sq", "third try", instance=2, attempt=3))
    await post_lines(control.url, "w", lines, first_seq=1)
    environment = env(tmp_path, STAGEFLOW_SERVER_URL=control.url)

    shown = await stageflow("logs", "r1", environment=environment)
    assert shown.returncode == 0, shown.stderr
    printed = shown.stdout.splitlines()
    assert len(printed) == 2501  # three pages of the server's 1,000
    assert [text.split(" ", 2)[2] for text in printed[:-1]] == [f"m{i}" for i in range(2500)]
    assert printed[0].split(" ")[1] == "a"
    assert printed[-1].split(" ", 1)[1] == "sq[2]#3 third try"

    only_b = await stageflow("logs", "r1", "--stage", "b", "--json", environment=environment)
    documents = [json.loads(text) for text in only_b.stdout.splitlines()]
    assert [d["message"] for d in documents] == [f"m{i}" for i in range(1, 2500, 2)]


async def test_logs_follow_shows_new_lines_until_the_run_ends(
    control: FakeControlPlane, tmp_path: Path
) -> None:
    await post_lines(control.url, "w", [line("r2", "a", f"before {i}") for i in range(5)], 1)
    out = tmp_path / "follow.out"
    with open(out, "w") as handle:
        follower = subprocess.Popen(
            [sys.executable, "-m", "stageflow", "logs", "r2", "--follow", "--server", control.url],
            env=env(tmp_path),
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        await wait_until(lambda: out.read_text().count("before") == 5, timeout=60)
        await post_lines(control.url, "w", [line("r2", "a", f"after {i}") for i in range(5)], 6)
        await wait_until(lambda: out.read_text().count("after") == 5, timeout=60)
        control.ended_runs.add("r2")
        code = await asyncio.wait_for(asyncio.to_thread(follower.wait), 60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert code == 0, out.read_text()
    messages = [text.split(" ", 2)[2] for text in out.read_text().splitlines()]
    assert messages == [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]


async def test_workers_lists_what_registered(control: FakeControlPlane, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=control.url, headers=headers) as client:
        for worker_id, state in (("gpu-box:1", "alive"), ("cpu-box:2", "draining")):
            registration = {
                "worker_id": worker_id,
                "host": worker_id.split(":")[0],
                "queues": ["ml"],
                "tags": ["gpu"],
                "cpus": 16,
                "memory_bytes": 64 << 30,
                "disk_bytes": 1 << 40,
                "gpus": [{"index": 0, "name": "H100", "memory_bytes": 80 << 30}],
                "cost_per_hour": 3.5,
                "data_url": "http://x:1",
            }
            (await client.post("/api/v1/workers/register", json=registration)).raise_for_status()
            load = {
                "cpu_percent": 12.0,
                "memory_percent": 40.0,
                "running_stages": 2,
                "disk_free_bytes": 1 << 39,
                "gpu_util": [87.0],
            }
            beat = await client.post(
                f"/api/v1/workers/{worker_id}/heartbeat", json={"state": state, "load": load}
            )
            beat.raise_for_status()
    environment = env(tmp_path, STAGEFLOW_SERVER_URL=control.url)

    table = await stageflow("workers", environment=environment)
    assert table.returncode == 0, table.stderr
    rows = {text.split()[0]: text for text in table.stdout.splitlines()[1:]}
    assert set(rows) == {"gpu-box:1", "cpu-box:2"}
    assert "draining" in rows["cpu-box:2"] and "alive" in rows["gpu-box:1"]
    assert (
        "H100" in rows["gpu-box:1"]
        and "3.5" in rows["gpu-box:1"]
        and "gpu 87%" in rows["gpu-box:1"]
    )

    listed = await stageflow("workers", "--json", "--state", "draining", environment=environment)
    assert [w["worker_id"] for w in json.loads(listed.stdout)["workers"]] == ["cpu-box:2"]


async def test_errors_say_what_to_do(control: FakeControlPlane, tmp_path: Path) -> None:
    nowhere = await stageflow("workers", environment=env(tmp_path))
    assert nowhere.returncode == 1
    assert "STAGEFLOW_SERVER_URL" in nowhere.stderr

    wrong = env(tmp_path, STAGEFLOW_SERVER_URL=control.url, STAGEFLOW_TOKEN="w" * 24)
    refused = await stageflow("logs", "r1", environment=wrong)
    assert refused.returncode == 1
    assert "403" in refused.stderr and "STAGEFLOW_TOKEN" in refused.stderr

    await control.stop()
    down = await stageflow(
        "logs", "r1", environment=env(tmp_path, STAGEFLOW_SERVER_URL=control.url)
    )
    assert down.returncode == 1 and "cannot reach the control plane" in down.stderr
