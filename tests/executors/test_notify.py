"""`uses: notify` in real pipelines, posting to a real loopback HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from helpers import finish, pipeline, start
from hooks_http import Receiver
from temporalio.client import Client

from stageflow.executors.notify import NotifyExecutor
from stageflow.worker.runner import StageWorker

SECRET = "webhook-secret-" + "s" * 20
SECRET_ENV = "STAGEFLOW_TEST_NOTIFY_SECRET"
ONCE = {"max_attempts": 1}


def _python(queue: str, function: str, **with_: Any) -> dict[str, Any]:
    return {"uses": "python", "queue": queue, "with": {"function": function, **with_}}


def _notify(queue: str, url: str, **with_: Any) -> dict[str, Any]:
    return {"uses": "notify", "queue": queue, "with": {"url": url, "backoff": 0.01, **with_}}


async def test_signed_payload_is_posted_and_server_errors_are_retried(
    client: Client, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with Receiver(statuses=[503]) as hook:
        spec = pipeline(
            {
                "work": _python(queue, "exec_stage_functions:add", a=1),
                "tell": {
                    **_notify(
                        queue,
                        f"{hook.url}/hooks/done",
                        payload={"text": "sum is ${work.outputs.sum}", "level": "info"},
                        headers={"X-Team": "data"},
                        secret_env=SECRET_ENV,
                    ),
                    "needs": ["work"],
                },
            }
        )
        async with StageWorker(client, task_queues=[queue]):
            run_id = await start(client, spec)
            state = await finish(client, run_id)
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    assert state.stages["tell"].outputs["status"] == 200
    assert state.stages["tell"].outputs["attempts"] == 2
    first, second = hook.received
    assert first.body == second.body  # a retry sends (and signs) the same bytes
    body = second.json()
    assert body["text"] == "sum is 11" and body["level"] == "info"
    assert {k: body["stageflow"][k] for k in ("run_id", "pipeline", "stage")} == {
        "run_id": run_id,
        "pipeline": "t",
        "stage": "tell",
    }
    expected = hmac.new(SECRET.encode(), second.body, hashlib.sha256).hexdigest()
    assert second.headers["x-stageflow-signature"] == f"sha256={expected}"
    assert second.headers["x-team"] == "data"
    assert second.headers["content-type"] == "application/json"


async def test_when_always_reports_the_failure_and_a_rejection_is_not_retried(
    client: Client, queue: str
) -> None:
    async with Receiver() as hook, Receiver(statuses=[400, 400, 400]) as refusing:
        spec = pipeline(
            {
                "ok": _python(queue, "exec_stage_functions:takes_nothing"),
                "bad": {
                    **_python(queue, "exec_stage_functions:raises_value_error", message="x"),
                    "retry": ONCE,
                },
                "report": {
                    **_notify(
                        queue,
                        hook.url,
                        payload={"status": "${run.status}", "failed": "${run.failed}"},
                    ),
                    "needs": ["ok", "bad", "refused"],
                    "when": "always",
                },
                "refused": {
                    **_notify(queue, refusing.url, payload={"x": 1}),
                    "retry": {"max_attempts": 3, "initial_interval": 0.1},
                },
            }
        )
        async with StageWorker(client, task_queues=[queue]):
            state = await finish(client, await start(client, spec))
    assert state.stages["report"].status == "succeeded", state.stages["report"].error
    (report,) = hook.received
    assert report.json()["status"] == "failing"
    assert sorted(report.json()["failed"]) == ["bad", "refused"]
    refused = state.stages["refused"]
    assert refused.status == "failed" and refused.attempts == 1
    assert len(refusing.received) == 1 and "HTTP 400" in (refused.error or "")


def test_bad_notify_parameters_are_rejected_before_the_run() -> None:
    problems = NotifyExecutor.check_params({"url": "ftp://x", "retries": -1, "secret": "s"})
    assert {loc[0] for loc, _ in problems} == {"url", "retries", "secret"}
    assert NotifyExecutor.check_params({"url": "${params.hook}"}) == []
