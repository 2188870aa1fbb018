"""`uses: llm` in real pipelines against a local OpenAI-compatible server (stageflow.testing.openai_server),
driven by the official ``openai`` client: retries, limits, usage and cost, failures, resume."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers import finish, pipeline, start
from temporalio.client import Client

from stageflow.errors import SpecError
from stageflow.executors.parquet_io import dataset_files
from stageflow.spec.validate import parse_pipeline
from stageflow.testing.openai_server import FakeOpenAI
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

KEY = "sk-test-" + "k" * 32
KEY_ENV = "STAGEFLOW_TEST_LLM_KEY"


def _llm(queue: str, server: FakeOpenAI, **with_: Any) -> dict[str, Any]:
    return {
        "uses": "llm",
        "queue": queue,
        "with": {
            "base_url": server.base_url,
            "api_key_env": KEY_ENV,
            "model": "fake-1",
            "backoff": 0.01,
            **with_,
        },
    }


def _rows(plane: DataPlane, ref: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    dest = tmp_path / f"read-{ref['sha256'][:8]}"
    plane.store.materialize(ref["sha256"], "dir", dest)
    return [row for f in dataset_files(dest) for row in pq.read_table(f).to_pylist()]


async def _run(client: Client, queue: str, plane: DataPlane, spec: Any) -> Any:
    async with StageWorker(client, task_queues=[queue], data_plane=plane):
        return await finish(client, await start(client, spec))


def _words(text: str) -> int:
    return len(text.split())


async def test_template_prompts_with_retries_concurrency_usage_and_cost(
    client: Client, queue: str, data_plane: DataPlane, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    system = "You answer briefly."
    async with FakeOpenAI(KEY, faults={1: 429, 2: 429, 3: 429, 7: 500}, delay=0.05) as server:
        spec = pipeline(
            {
                "make": {
                    "uses": "python",
                    "queue": queue,
                    "with": {"function": "hooks_llm:questions", "n": 20},
                },
                "ask": {
                    **_llm(
                        queue,
                        server,
                        input="${make.outputs.table}",
                        template="Explain {topic} with {detail}",
                        id_column="key",
                        system=system,
                        max_tokens=4,
                        concurrency=3,
                        checkpoint_every=6,
                        price={"input_per_1m": 2.5, "output_per_1m": 10.0},
                    ),
                    "needs": ["make"],
                },
            }
        )
        state = await _run(client, queue, data_plane, spec)
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    out = state.stages["ask"].outputs
    rows = _rows(data_plane, out["responses"], tmp_path)
    assert out["rows"] == len(rows) == 20
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == [f"k{i:03d}" for i in range(20)]
    for i in range(20):
        row = by_id[f"k{i:03d}"]
        prompt = f"Explain topic {i} with detail number {i}"
        assert row["prompt"] == prompt
        assert row["response"] == " ".join(prompt.upper().split()[:4])
        assert row["finish_reason"] == "length"
        assert row["prompt_tokens"] == _words(system) + _words(prompt)
        assert row["completion_tokens"] == 4
    # three 429s and one 500, each retried once more: every request reached the server
    assert out["retries"] == 4
    assert out["requests"] == len(server.seen) == 24
    assert [s.status for s in server.seen[:3]] == [429, 429, 429]
    assert 2 <= server.max_in_flight <= 3
    prompt_tokens = sum(r["prompt_tokens"] for r in rows)
    assert out["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 80,
        "total_tokens": prompt_tokens + 80,
    }
    assert out["cost"] == pytest.approx((prompt_tokens * 2.5 + 80 * 10.0) / 1e6)


async def test_requests_per_minute_is_respected(
    client: Client, queue: str, data_plane: DataPlane, monkeypatch: Any
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    prompts = [f"question {i}" for i in range(10)]
    async with FakeOpenAI(KEY, delay=0.0) as server:
        spec = pipeline(
            {"ask": _llm(queue, server, prompts=prompts, concurrency=2, requests_per_minute=300)}
        )
        state = await _run(client, queue, data_plane, spec)
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    assert len(server.seen) == 10
    # 300/min = 5/s evenly spaced: any 1 s window holds at most 5 (+1 for its closed ends)
    assert server.max_in_window(1.0) <= 6, sorted(s.at for s in server.seen)


async def test_a_rejected_key_fails_at_once_and_a_missing_key_names_its_variable(
    client: Client, queue: str, data_plane: DataPlane, monkeypatch: Any
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-" + "w" * 30)
    monkeypatch.delenv("STAGEFLOW_TEST_LLM_UNSET", raising=False)
    retry = {"max_attempts": 3, "initial_interval": 0.1}
    async with FakeOpenAI(KEY) as server:
        spec = pipeline(
            {
                "wrong": {**_llm(queue, server, prompts=["hello there"]), "retry": retry},
                "unset": {
                    **_llm(
                        queue,
                        server,
                        prompts=["hello there"],
                        api_key_env="STAGEFLOW_TEST_LLM_UNSET",
                    ),
                    "retry": retry,
                },
            }
        )
        state = await _run(client, queue, data_plane, spec)
    wrong, unset = state.stages["wrong"], state.stages["unset"]
    assert wrong.status == "failed" and unset.status == "failed"
    assert "HTTP 401" in (wrong.error or "") and "Incorrect API key provided" in wrong.error
    assert "sk-wrong" not in wrong.error
    assert wrong.attempts == 1 and len(server.seen) == 1  # not retried, by us or by Temporal
    assert "STAGEFLOW_TEST_LLM_UNSET" in (unset.error or "") and unset.attempts == 1


async def test_a_retried_stage_does_not_pay_again_for_answered_prompts(
    client: Client, queue: str, data_plane: DataPlane, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    prompts = [f"prompt number {i}" for i in range(12)]
    # Requests 6-9 fail; with one retry per prompt, the first attempt gives up after 5 answers.
    faults = dict.fromkeys(range(6, 10), 503)
    async with FakeOpenAI(KEY, faults=faults) as server:
        spec = pipeline(
            {
                "ask": {
                    **_llm(
                        queue,
                        server,
                        prompts=prompts,
                        concurrency=2,
                        max_retries=1,
                        checkpoint_every=2,
                    ),
                    "retry": {"max_attempts": 4, "initial_interval": 0.1},
                }
            }
        )
        state = await _run(client, queue, data_plane, spec)
    ask = state.stages["ask"]
    assert ask.status == "succeeded", ask.error
    assert ask.attempts >= 2
    answered = server.answered()
    assert set(answered) == set(prompts)
    assert max(answered.values()) == 1, answered  # no prompt was answered (and paid) twice
    rows = _rows(data_plane, ask.outputs["responses"], tmp_path)
    assert sorted(r["id"] for r in rows) == list(range(12))
    assert all(r["response"] == r["prompt"].upper() for r in rows)
    assert ask.outputs["retries"] >= 2 and ask.outputs["requests"] >= 14


def test_bad_llm_parameters_are_reported_with_line_and_field() -> None:
    text = textwrap.dedent(
        """
        name: p
        stages:
          a:
            uses: llm
            with:
              model: gpt-x
              prompts: [hi]
              concurrency: 0
          b:
            uses: llm
            with: {model: gpt-x, input: /data/t.parquet}
        """
    ).lstrip()
    with pytest.raises(SpecError) as info:
        parse_pipeline(text, "p.yaml")
    issues = {issue.field: issue for issue in info.value.issues}
    assert issues["stages.a.with.concurrency"].line == 8
    assert "greater than or equal to 1" in issues["stages.a.with.concurrency"].message
    assert "prompt_column or template" in issues["stages.b.with"].message
    assert issues["stages.b.with"].line == 11
