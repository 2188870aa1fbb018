"""Log capture: what each stage prints and logs is attributed to it, however stages interleave."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from helpers import finish, pipeline, start
from temporalio.client import Client

from stageflow.worker.context import StageContext
from stageflow.worker.jsonlog import JsonFormatter, json_sink
from stageflow.worker.logcapture import (
    MAX_MESSAGE_CHARS,
    LogCapture,
    LogLine,
    StageKey,
    current_stage,
    stage_scope,
)
from stageflow.worker.runner import StageWorker


def collect(capture: LogCapture) -> list[LogLine]:
    got: list[LogLine] = []
    capture.add_sink(got.append)
    return got


def by_stage(lines: list[LogLine]) -> dict[tuple[str, int | None, str], list[str]]:
    grouped: dict[tuple[str, int | None, str], list[str]] = defaultdict(list)
    for line in lines:
        grouped[(line.stage, line.instance, line.stream)].append(line.message)
    return grouped


def expected(name: str, lines: int) -> dict[str, list[str]]:
    return {
        "stdout": [f"{name} out {i}" for i in range(lines)],
        "stderr": [f"{name} err {i}" for i in range(lines)],
        "log": [f"{name} log {i}" for i in range(lines)],
    }


async def test_concurrent_sync_and_async_stages_keep_their_own_lines() -> None:
    """Eight stages at once, four in threads and four on the loop, all printing and logging."""
    count = 40
    capture = LogCapture(echo=False)
    got = collect(capture)
    start_together = asyncio.Event()
    threads_together = threading.Barrier(4)

    def sync_stage(ctx: StageContext) -> None:
        threads_together.wait(timeout=30)
        for i in range(count):
            time.sleep(0.001)  # let the other threads in
            print(f"{ctx.name} out {i}")
            sys.stderr.write(f"{ctx.name} err ")  # a line written in two pieces
            sys.stderr.write(f"{i}\n")
            ctx.logger.info(f"{ctx.name} log {i}")

    async def async_stage(ctx: StageContext) -> None:
        await start_together.wait()
        for i in range(count):
            print(f"{ctx.name} out {i}")
            print(f"{ctx.name} err {i}", file=sys.stderr)
            ctx.logger.info(f"{ctx.name} log {i}")
            await asyncio.sleep(0)

    async def run(instance: int) -> None:
        ctx = StageContext(run_id="r1", pipeline="p", stage="s", attempt=1, instance=instance)
        with stage_scope(ctx.key):
            if instance % 2:
                await asyncio.to_thread(sync_stage, ctx)
            else:
                await async_stage(ctx)

    with capture.installed():
        tasks = [asyncio.create_task(run(i)) for i in range(8)]
        await asyncio.sleep(0)
        start_together.set()
        await asyncio.gather(*tasks)
        print("outside any stage")  # passes through, not captured

    grouped = by_stage(got)
    for instance in range(8):
        for stream, messages in expected(f"s[{instance}]", count).items():
            assert grouped[("s", instance, stream)] == messages, (instance, stream)
    assert len(got) == 8 * 3 * count
    assert [line.seq for line in got] == list(range(1, len(got) + 1))
    assert {line.run_id for line in got} == {"r1"}
    assert all(line.attempt == 1 for line in got)
    assert capture.errors == 0
    assert sys.stdout is capture.real_stdout  # uninstalled
    # The stages really did run at the same time: their lines alternate in seq order.
    owners = [line.instance for line in got]
    switches = sum(1 for a, b in itertools.pairwise(owners) if a != b)
    assert switches > 8 * 4


async def test_pipeline_stages_are_captured_per_matrix_instance(client: Client, queue: str) -> None:
    """Through the real stage activity: a sync matrix stage (threads) beside an async stage."""
    spec = pipeline(
        {
            "fan": {
                "uses": "python",
                "queue": queue,
                "matrix": {"x": [0, 1, 2, 3]},
                "with": {"function": "log_steps:talk", "lines": 15, "delay": 0.01},
            },
            "solo": {
                "uses": "python",
                "queue": queue,
                "with": {"function": "log_steps:talk_async", "lines": 15, "delay": 0.01},
            },
            "sh": {
                "uses": "shell",
                "queue": queue,
                "with": {"command": "for i in 0 1 2; do echo sh out $i; echo sh err $i >&2; done"},
            },
        }
    )
    capture = LogCapture(echo=False)
    got = collect(capture)
    with capture.installed():
        async with StageWorker(client, task_queues=[queue]):
            run_id = await start(client, spec)
            state = await finish(client, run_id)
    assert state.status == "succeeded", {k: v.error for k, v in state.stages.items()}
    assert {line.run_id for line in got} == {run_id}
    grouped = by_stage(got)
    for instance in range(4):
        for stream, messages in expected(f"fan[{instance}]", 15).items():
            assert grouped[("fan", instance, stream)] == messages
    for stream, messages in expected("solo", 15).items():
        assert grouped[("solo", None, stream)] == messages
    # A shell command's output is logged line by line by the executor: stdout as INFO,
    # stderr as WARNING, both on the stage's log stream.
    shell = [(line.level, line.message) for line in got if line.stage == "sh"]
    assert sorted(shell) == sorted(
        [("INFO", f"sh out {i}") for i in range(3)] + [("WARNING", f"sh err {i}") for i in range(3)]
    )
    seqs = [line.seq for line in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_partial_lines_carriage_returns_and_very_long_lines() -> None:
    capture = LogCapture(echo=False)
    got = collect(capture)
    key = StageKey("r", "s", None, 2)
    with capture.installed(), stage_scope(key):
        sys.stdout.write("abc")
        sys.stdout.write("def\nsecond")
        sys.stdout.write(" line\r\n")
        sys.stdout.write("progress 10%\rprogress 50%\r")
        sys.stdout.write("progress 100%\n")
        print("x" * (MAX_MESSAGE_CHARS * 2 + 5))
        sys.stdout.write("no newline at the end")
    assert [line.message for line in got] == [
        "abcdef",
        "second line",
        "progress 100%",
        "x" * MAX_MESSAGE_CHARS,
        "x" * MAX_MESSAGE_CHARS,
        "x" * 5,
        "no newline at the end",  # flushed when the stage scope ends
    ]
    assert {(line.attempt, line.stream, line.level) for line in got} == {(2, "stdout", "INFO")}


async def test_writes_outside_stages_pass_through_and_echo_follows_the_setting() -> None:
    real = io.StringIO()
    for echo, shown in ((True, "outside\ninside\n"), (False, "outside\n")):
        real.seek(0)
        real.truncate()
        capture = LogCapture(echo=echo)
        got = collect(capture)
        saved = sys.stdout
        sys.stdout = real
        try:
            with capture.installed():
                print("outside")
                with stage_scope(StageKey("r", "s", None, 1)):
                    assert current_stage() == StageKey("r", "s", None, 1)
                    print("inside")
                assert current_stage() is None
        finally:
            sys.stdout = saved
        assert real.getvalue() == shown
        assert [line.message for line in got] == ["inside"]


async def test_logger_of_a_thread_the_stage_started_itself_is_still_attributed() -> None:
    """Threads started without the stage's context lose the context variable, but ``ctx.logger``
    carries the stage on every record."""
    capture = LogCapture(echo=False)
    got = collect(capture)
    ctx = StageContext(run_id="r", pipeline="p", stage="s", attempt=3)
    with capture.installed():
        worker = threading.Thread(target=lambda: ctx.logger.warning("from a bare thread"))
        worker.start()
        worker.join()
        logging.getLogger("someone.else").warning("not in a stage: not captured")
        with stage_scope(ctx.key):
            logging.getLogger("user.module").warning("a stage's own logger")
    assert [(line.message, line.level, line.attempt) for line in got] == [
        ("from a bare thread", "WARNING", 3),
        ("a stage's own logger", "WARNING", 3),
    ]


async def test_json_log_has_the_stage_fields_and_the_same_numbering() -> None:
    capture = LogCapture(echo=False)
    out = io.StringIO()
    capture.add_sink(json_sink(out, capture.stream_id))
    got = collect(capture)
    key = StageKey("run-9", "train", 4, 2)
    with capture.installed(), stage_scope(key):
        print("hello")
        logging.getLogger("stageflow.stage.train").info("epoch 1")
    documents = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["message"] for d in documents] == ["hello", "epoch 1"]
    for document, line in zip(documents, got, strict=True):
        assert document["seq"] == line.seq
        assert document["stream_id"] == capture.stream_id
        assert (document["run_id"], document["stage"], document["instance"]) == (
            "run-9",
            "train",
            4,
        )
        assert document["attempt"] == 2
    assert [d["stream"] for d in documents] == ["stdout", "log"]

    record = logging.LogRecord("stageflow.worker", logging.ERROR, __file__, 1, "boom", None, None)
    plain: dict[str, Any] = json.loads(JsonFormatter().format(record))
    assert "run_id" not in plain and plain["level"] == "ERROR"
    with stage_scope(key):
        inside = json.loads(JsonFormatter().format(record))
    assert (inside["run_id"], inside["stage"], inside["attempt"]) == ("run-9", "train", 2)


async def test_only_one_capture_at_a_time(tmp_path: Path) -> None:
    first = LogCapture()
    with first.installed():
        try:
            LogCapture().install()
        except RuntimeError:
            pass
        else:
            raise AssertionError("a second capture was installed")
    assert not any(type(h).__name__ == "_CaptureHandler" for h in logging.getLogger().handlers)
