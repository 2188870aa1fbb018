"""The pipeline workflow on a real Temporal dev server, with real in-process workers."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from helpers import finish, fn, pipeline, start, wait_until
from steps import read_log
from temporalio.client import Client

from stageflow.engine import runs
from stageflow.engine.types import PENDING, SUCCEEDED, WAITING_APPROVAL
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker


async def test_dag_order_and_parallelism(client: Client, queue: str, log_dir: Path) -> None:
    def timed(name: str, seconds: float, needs: list[str]) -> dict:
        params = {
            "function": fn("timed"),
            "log_dir": str(log_dir),
            "name": name,
            "seconds": seconds,
        }
        return {"uses": "python", "queue": queue, "needs": needs, "with": params}

    spec = pipeline(
        {
            "a": timed("a", 0.2, []),
            "b": timed("b", 1.0, ["a"]),
            "c": timed("c", 1.0, ["a"]),
            "d": timed("d", 0.0, ["b", "c"]),
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded"
    a, b, c, d = (read_log(log_dir, name)[0] for name in "abcd")
    assert a["end"] <= b["start"] and a["end"] <= c["start"]
    # b and c are independent: they ran at the same time.
    assert b["start"] < c["end"] and c["start"] < b["end"]
    assert d["start"] >= max(b["end"], c["end"])
    assert list(state.stages) == ["a", "b", "c", "d"]


async def test_fan_out_and_fan_in_keep_matrix_order(client: Client, queue: str) -> None:
    spec = pipeline(
        {
            "make": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("numbers"), "count": 3},
            },
            "mul": {
                "uses": "python",
                "queue": queue,
                "needs": ["make"],
                "matrix": {"x": "${make.outputs.numbers}", "y": [10, 100]},
                "with": {"function": fn("multiply"), "x": "${matrix.x}", "y": "${matrix.y}"},
            },
            "sum": {
                "uses": "python",
                "queue": queue,
                "needs": ["mul"],
                "with": {"function": fn("total"), "values": "${mul.outputs.value}"},
            },
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded"
    expected = [x * y for x in (1, 2, 3) for y in (10, 100)]
    assert [out["value"] for out in state.stages["mul"].outputs] == expected
    assert [out["instance"] for out in state.stages["mul"].outputs] == list(range(6))
    assert state.stages["sum"].outputs == {"total": sum(expected), "values": expected}
    assert state.stages["mul"].instances == state.stages["mul"].instances_done == 6


async def test_transient_errors_are_retried(client: Client, queue: str, log_dir: Path) -> None:
    spec = pipeline(
        {
            "flaky": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("flaky"), "log_dir": str(log_dir), "failures": 2},
                "retry": {"max_attempts": 4, "initial_interval": "100ms", "backoff": 1.0},
            }
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded"
    assert state.stages["flaky"].attempts == 3
    assert [r["attempt"] for r in read_log(log_dir, "flaky")] == [1, 2, 3]


async def test_retries_run_out_and_the_run_fails(client: Client, queue: str, log_dir: Path) -> None:
    spec = pipeline(
        {
            "flaky": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("flaky"), "log_dir": str(log_dir), "failures": 10},
                "retry": {"max_attempts": 2, "initial_interval": "100ms"},
            }
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await finish(client, await start(client, spec))
    assert state.status == "failed"
    stage = state.stages["flaky"]
    assert stage.status == "failed" and stage.attempts == 2
    assert stage.error_type == "ConnectionError" and "attempt 2" in (stage.error or "")
    assert len(read_log(log_dir, "flaky")) == 2


async def test_non_retryable_error_fails_at_once_and_skips_dependents(
    client: Client, queue: str, log_dir: Path
) -> None:
    spec = pipeline(
        {
            "bad": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("bad_input"), "log_dir": str(log_dir)},
                "retry": {
                    "max_attempts": 5,
                    "initial_interval": "100ms",
                    "non_retryable": ["ValueError"],
                },
            },
            "after": {
                "uses": "python",
                "queue": queue,
                "needs": ["bad"],
                "with": {"function": fn("whoami")},
            },
            "independent": {"uses": "python", "queue": queue, "with": {"function": fn("whoami")}},
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await finish(client, await start(client, spec))
    assert state.status == "failed"
    assert state.stages["bad"].attempts == 1
    assert state.stages["bad"].error_type == "ValueError"
    assert "malformed" in (state.stages["bad"].error or "")
    assert len(read_log(log_dir, "bad_input")) == 1
    assert state.stages["after"].status == "upstream_failed"
    assert state.stages["independent"].status == SUCCEEDED


async def test_timeout_fails_a_stage_that_runs_too_long(
    client: Client, queue: str, log_dir: Path
) -> None:
    spec = pipeline(
        {
            "slow": {
                "uses": "python",
                "queue": queue,
                "timeout": "1s",
                "retry": {"max_attempts": 1},
                "with": {
                    "function": fn("timed"),
                    "log_dir": str(log_dir),
                    "name": "slow",
                    "seconds": 30,
                },
            }
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await asyncio.wait_for(finish(client, await start(client, spec)), 20)
    assert state.status == "failed"
    assert "timed out" in (state.stages["slow"].error or "").lower()
    assert read_log(log_dir, "slow") == []


async def test_pause_holds_new_stages_and_resume_releases_them(
    client: Client, queue: str, log_dir: Path
) -> None:
    def timed(name: str, seconds: float, needs: list[str]) -> dict:
        params = {
            "function": fn("timed"),
            "log_dir": str(log_dir),
            "name": name,
            "seconds": seconds,
        }
        return {"uses": "python", "queue": queue, "needs": needs, "with": params}

    spec = pipeline({"first": timed("first", 1.0, []), "second": timed("second", 0, ["first"])})
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec)

        async def first_running() -> bool:
            return (await runs.run_state(client, run_id)).stages["first"].status == "running"

        await wait_until(first_running)
        await runs.pause_run(client, run_id)
        await wait_until(lambda: read_log(log_dir, "first"))
        await asyncio.sleep(1.5)
        state = await runs.run_state(client, run_id)
        assert state.status == "paused"
        assert state.stages["first"].status == SUCCEEDED
        assert state.stages["second"].status == PENDING
        assert read_log(log_dir, "second") == []
        await runs.resume_run(client, run_id)
        state = await finish(client, run_id)
    assert state.status == "succeeded"
    assert read_log(log_dir, "second")[0]["start"] >= read_log(log_dir, "first")[0]["end"] + 1.0


async def test_cancel_stops_running_stages(client: Client, queue: str, log_dir: Path) -> None:
    spec = pipeline(
        {
            "long": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("wait_for_cancel"), "log_dir": str(log_dir)},
            },
            "later": {
                "uses": "python",
                "queue": queue,
                "needs": ["long"],
                "with": {"function": fn("whoami")},
            },
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec, heartbeat_timeout=2.0)
        await wait_until(lambda: read_log(log_dir, "wait_for_cancel"))
        await runs.cancel_run(client, run_id)
        state = await finish(client, run_id)
        await wait_until(lambda: len(read_log(log_dir, "wait_for_cancel")) == 2, timeout=10)
    assert state.status == "cancelled"
    assert state.stages["long"].status == "cancelled"
    assert state.stages["later"].status == "cancelled"


async def test_approval_gate_waits_for_approve(client: Client, queue: str, log_dir: Path) -> None:
    spec = pipeline(
        {
            "prep": {"uses": "python", "queue": queue, "with": {"function": fn("whoami")}},
            "ship": {
                "uses": "python",
                "queue": queue,
                "needs": ["prep"],
                "gate": "approve",
                "with": {"function": fn("timed"), "log_dir": str(log_dir), "name": "ship"},
            },
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec)

        async def waiting() -> bool:
            state = await runs.run_state(client, run_id)
            return state.stages["ship"].status == WAITING_APPROVAL

        await wait_until(waiting)
        await asyncio.sleep(1.0)
        assert read_log(log_dir, "ship") == []
        await runs.approve_run(client, run_id, "ship")
        state = await finish(client, run_id)
    assert state.status == "succeeded"
    assert len(read_log(log_dir, "ship")) == 1


async def test_retry_resumes_from_the_failed_stage(
    client: Client, queue: str, log_dir: Path
) -> None:
    flag = log_dir / "broken"
    flag.touch()

    def step(name: str, needs: list[str], **extra: object) -> dict:
        params = {
            "function": fn("fail_while_flag"),
            "log_dir": str(log_dir),
            "name": name,
            "flag": str(log_dir / "never"),
        }
        return {"uses": "python", "queue": queue, "needs": needs, "with": params, **extra}

    fragile = step("fragile", ["first"], retry={"max_attempts": 1})
    fragile["with"]["flag"] = str(flag)
    spec = pipeline(
        {
            "first": step("first", []),
            "fan": step("fan", ["first"], matrix={"i": [0, 1, 2]}),
            "fragile": fragile,
            "last": step("last", ["fragile", "fan"]),
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec)
        state = await finish(client, run_id)
        assert state.status == "failed"
        assert state.stages["fragile"].status == "failed"
        assert state.stages["last"].status == "upstream_failed"
        flag.unlink()
        await runs.retry_run(client, run_id)
        state = await finish(client, run_id)
    assert state.status == "succeeded"
    assert state.run_id == run_id
    # Completed stages ran once in all; the failed one ran again.
    assert len(read_log(log_dir, "first")) == 1
    assert len(read_log(log_dir, "fan")) == 3
    assert len(read_log(log_dir, "fragile")) == 2
    assert len(read_log(log_dir, "last")) == 1
    assert state.stages["first"].reused and state.stages["fan"].reused
    assert not state.stages["fragile"].reused


async def test_retry_of_a_matrix_reruns_only_failed_instances(
    client: Client, queue: str, log_dir: Path
) -> None:
    broken = log_dir / "flag-2"  # only instance 2 looks for this file
    broken.touch()
    spec = pipeline(
        {
            "fan": {
                "uses": "python",
                "queue": queue,
                "matrix": {"i": [0, 1, 2, 3]},
                "retry": {"max_attempts": 1},
                "with": {
                    "function": fn("fail_while_flag"),
                    "log_dir": str(log_dir),
                    "name": "fan",
                    "flag": f"{log_dir}/flag-${{matrix.i}}",
                },
            }
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec)
        state = await finish(client, run_id)
        assert state.status == "failed"
        assert state.stages["fan"].instances_done == 3
        broken.unlink()
        await runs.retry_run(client, run_id)
        state = await finish(client, run_id)
    assert state.status == "succeeded"
    calls = [r["instance"] for r in read_log(log_dir, "fan")]
    assert sorted(calls) == [0, 1, 2, 2, 3]
    assert [out["instance"] for out in state.stages["fan"].outputs] == [0, 1, 2, 3]


async def test_run_templates_and_shell_outputs(client: Client, queue: str) -> None:
    command = 'echo \'{"id": "${run.id}", "date": "${run.date}", "pipeline": "${run.pipeline}"}\''
    spec = pipeline({"info": {"uses": "shell", "queue": queue, "with": {"command": command}}})
    async with StageWorker(client, task_queues=[queue]):
        run_id = await start(client, spec)
        state = await finish(client, run_id)
    outputs = state.stages["info"].outputs
    started = datetime.fromisoformat(state.started_at or "")
    assert outputs == {
        "exit_code": 0,
        "id": run_id,
        "date": started.date().isoformat(),
        "pipeline": "t",
    }


async def test_when_runs_stages_on_failure_or_always(
    client: Client, queue: str, log_dir: Path
) -> None:
    def stage(needs: list[str], when: str) -> dict:
        return {
            "uses": "python",
            "queue": queue,
            "needs": needs,
            "when": when,
            "with": {"function": fn("echo"), "status": "${run.status}", "failed": "${run.failed}"},
        }

    spec = pipeline(
        {
            "bad": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("bad_input"), "log_dir": str(log_dir)},
                "retry": {"max_attempts": 1},
            },
            "good": {"uses": "python", "queue": queue, "with": {"function": fn("whoami")}},
            "alert": stage(["bad"], "failure"),
            "no_alert": stage(["good"], "failure"),
            "cleanup": stage(["bad", "good"], "always"),
            "report": stage(["good"], "success"),
            "after_bad": stage(["bad"], "success"),
        }
    )
    async with StageWorker(client, task_queues=[queue]):
        state = await finish(client, await start(client, spec))
    assert state.status == "failed"
    assert state.stages["alert"].status == SUCCEEDED
    assert state.stages["alert"].outputs == {"status": "failing", "failed": ["bad"]}
    assert state.stages["no_alert"].status == "skipped"
    assert state.stages["cleanup"].status == SUCCEEDED
    assert state.stages["cleanup"].outputs["failed"] == ["bad"]
    assert state.stages["after_bad"].status == "upstream_failed"
    assert state.stages["report"].status == SUCCEEDED


async def test_retry_reruns_the_producer_of_an_object_that_could_not_be_fetched(
    client: Client, queue: str, log_dir: Path, data_plane: DataPlane
) -> None:
    flag = log_dir / "corrupt"
    flag.touch()
    spec = pipeline(
        {
            "make": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("logged_blob"), "log_dir": str(log_dir), "size": 64},
            },
            "other": {
                "uses": "python",
                "queue": queue,
                "with": {"function": fn("logged_blob"), "log_dir": str(log_dir), "size": 64},
            },
            "use": {
                "uses": "python",
                "queue": queue,
                "needs": ["make", "other"],
                "with": {
                    "function": fn("reject_copy"),
                    "sha256": "${make.outputs.blob.sha256}",
                    "flag": str(flag),
                },
            },
        }
    )
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        run_id = await start(client, spec)
        state = await finish(client, run_id)
        assert state.stages["use"].error_type == "IntegrityError"
        flag.unlink()
        await runs.retry_run(client, run_id)
        state = await finish(client, run_id)
    assert state.status == "succeeded"
    assert not state.stages["make"].reused  # its copy was bad: made again
    assert state.stages["other"].reused
    assert len(read_log(log_dir, "logged_blob")) == 3  # make twice, other once
