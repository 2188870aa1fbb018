"""Stage events from workers: stored once per attempt and status, feeding progress and metrics."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def event(run_id: str, status: str, attempt: int = 1, at: str = "00", **detail: Any) -> dict:
    return {
        "run_id": run_id,
        "stage": "copy",
        "instance": None,
        "attempt": attempt,
        "status": status,
        "at": f"2026-01-01T00:00:{at}Z",
        "worker": "w1",
        "detail": detail or None,
    }


async def metrics(http: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    text = (await http.get("/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_lifecycle_events_are_deduplicated_and_counted(
    http: httpx.AsyncClient, unique: str
) -> None:
    before = await metrics(http)
    events = [
        event(unique, "started", 1, "00"),
        event(unique, "failed", 1, "04"),  # 4 s after its start
        event(unique, "started", 2, "10"),
        event(unique, "progress", 2, "11", bytes=500, total=1000, rate=100.0),
        event(unique, "succeeded", 2, "20", bytes=1000, seconds=10.0, duration_s=10.0),
    ]
    first = await http.post("/api/v1/events", json={"events": events})
    assert first.json() == {"accepted": 5, "duplicates": 0}
    again = await http.post("/api/v1/events", json={"events": events})
    assert again.json() == {"accepted": 5, "duplicates": 4}  # progress events are all kept

    after = await metrics(http)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("stageflow_stage_retries_total") == 1
    assert delta("stageflow_stage_duration_seconds_count", status="failed") == 1
    assert delta("stageflow_stage_duration_seconds_sum", status="failed") == 4
    assert delta("stageflow_stage_duration_seconds_sum", status="succeeded") == 10
    assert delta("stageflow_transfer_bytes_total") == 1000
    assert delta("stageflow_transfer_rate_bytes_per_second_count") == 1
    assert delta("stageflow_stage_events_total", status="progress") == 2
    assert delta("stageflow_stages", status="succeeded") == 1  # one stage, latest: succeeded


async def test_bad_events_are_refused(http: httpx.AsyncClient, unique: str) -> None:
    bad = await http.post("/api/v1/events", json={"events": [event(unique, "Not A Status")]})
    assert bad.status_code == 422
    assert any(issue["field"].endswith("status") for issue in bad.json()["issues"])
    zoned = event(unique, "started")
    zoned["at"] = "2026-01-01T00:00:00"  # no zone: read as UTC
    assert (await http.post("/api/v1/events", json={"events": [zoned]})).status_code == 200
