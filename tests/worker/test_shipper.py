"""The log shipper against a real HTTP control plane: outages, overflow, crashes, big lines.

Every test counts what the server stored: each line once, in ``seq`` order, nothing missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from control_plane import FakeControlPlane
from helpers import TOKEN, wait_until

from stageflow.worker.control import ControlClient
from stageflow.worker.logcapture import LogCapture, StageKey, stage_scope
from stageflow.worker.shipper import LogShipper

HERE = Path(__file__).resolve().parent
KEY = StageKey("run-1", "stage", None, 1)


@pytest.fixture
async def server() -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane(TOKEN)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


async def down_server() -> FakeControlPlane:
    """A control plane that is not running, on a port it can later be started on."""
    plane = FakeControlPlane(TOKEN)
    await plane.start()
    await plane.stop()
    return plane


def shipper_for(
    url: str, spool: Path, stream_id: str, *, worker: str = "w1", **options: float
) -> tuple[LogShipper, ControlClient]:
    client = ControlClient(url, token=TOKEN)
    settings: dict[str, float] = {
        "flush_interval": 0.05,
        "backoff_initial": 0.05,
        "backoff_max": 0.3,
        **options,
    }
    shipper = LogShipper(
        client=client,
        worker=worker,
        stream_id=stream_id,
        spool_dir=spool,
        flush_interval=settings["flush_interval"],
        backoff_initial=settings["backoff_initial"],
        backoff_max=settings["backoff_max"],
        max_queue_lines=int(options.get("max_queue_lines", 10_000)),
        max_spool_bytes=int(options.get("max_spool_bytes", 1 << 30)),
    )
    return shipper, client


def assert_exactly_once_in_order(server: FakeControlPlane, worker: str, stream_id: str, n: int):
    lines = server.stream_lines(worker, stream_id)
    assert [line["seq"] for line in lines] == list(range(1, n + 1))
    assert [line["message"] for line in lines] == [f"line {i}" for i in range(n)]


async def test_every_line_arrives_once_in_order_through_a_server_outage(
    server: FakeControlPlane, tmp_path: Path
) -> None:
    capture = LogCapture(echo=False)
    shipper, client = shipper_for(server.url, tmp_path / "spool", capture.stream_id)
    await shipper.start()
    capture.add_sink(shipper.submit)
    produced = 0
    stop = threading.Event()

    def stage() -> None:  # a stage printing steadily from its thread
        nonlocal produced
        with stage_scope(KEY):
            while not stop.is_set():
                print(f"line {produced}")
                produced += 1
                stop.wait(0.0005)

    thread = threading.Thread(target=stage)
    with capture.installed():
        thread.start()
        try:
            await wait_until(lambda: len(server.lines) > 500)
            await server.stop()  # the outage: lines keep coming, the sender keeps failing
            await wait_until(lambda: shipper.stats.failures >= 3 and shipper.stats.spooled > 2000)
            before_restart = len(server.lines)
            await server.start()  # same port
            await wait_until(lambda: len(server.lines) > before_restart + 3000)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
        await wait_until(lambda: shipper.pending == 0)
    delivered_all = await shipper.close(timeout=5)
    await client.aclose()

    assert_exactly_once_in_order(server, "w1", capture.stream_id, produced)
    assert server.received == produced  # nothing was sent twice
    assert {line["run_id"] for line in server.lines} == {"run-1"}
    assert {line["stream"] for line in server.lines} == {"stdout"}
    assert delivered_all
    assert list((tmp_path / "spool").iterdir()) == []  # acknowledged segments are deleted


async def test_a_full_queue_spills_to_disk_and_order_is_kept(
    server: FakeControlPlane, tmp_path: Path
) -> None:
    capture = LogCapture(echo=False)
    shipper, client = shipper_for(
        server.url, tmp_path / "spool", capture.stream_id, max_queue_lines=100
    )
    await shipper.start()
    capture.add_sink(shipper.submit)
    count = 2500
    for i in range(count):  # faster than any sender: the loop is not even given back
        capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}")
    assert shipper.stats.spooled >= count - 100
    await wait_until(lambda: shipper.pending == 0)
    assert await shipper.close(timeout=5)
    await client.aclose()
    assert_exactly_once_in_order(server, "w1", capture.stream_id, count)
    assert server.received == count


async def test_batches_stay_within_the_contract_limits(
    server: FakeControlPlane, tmp_path: Path
) -> None:
    """About 20 MiB of long lines: the server refuses batches over 1,000 lines or 1 MiB."""
    capture = LogCapture(echo=False)
    shipper, client = shipper_for(server.url, tmp_path / "spool", capture.stream_id)
    await shipper.start()
    capture.add_sink(shipper.submit)
    count, width = 2000, 10_000
    for i in range(count):
        capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}" + "é" * width)
        if i % 100 == 0:
            await asyncio.sleep(0)
    await wait_until(lambda: shipper.pending == 0)
    assert await shipper.close(timeout=5)
    await client.aclose()
    lines = server.stream_lines("w1", capture.stream_id)
    assert [line["seq"] for line in lines] == list(range(1, count + 1))
    assert all(len(line["message"]) == len(f"line {i}") + width for i, line in enumerate(lines))
    assert shipper.stats.dropped == 0
    assert shipper.stats.posts >= 20  # about 20 MiB in batches of at most 1 MiB


async def test_the_spool_of_a_sigkilled_worker_is_delivered_by_the_next_start(
    tmp_path: Path,
) -> None:
    server = await down_server()
    spool = tmp_path / "spool"
    count = 3000
    with open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "shipper_process.py"), server.url, str(spool), str(count)],
            env={**os.environ, "STAGEFLOW_TOKEN": TOKEN},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    with process.stdout:
        try:
            report = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        finally:
            process.kill()  # SIGKILL: no flush, no cleanup
            process.wait()
    assert report, (tmp_path / "stderr").read_text()
    killed = json.loads(report)
    assert killed["spooled"] == count
    assert (spool / killed["stream_id"]).is_dir()

    await server.start()
    try:
        capture = LogCapture(echo=False)
        shipper, client = shipper_for(server.url, spool, capture.stream_id, worker="w2")
        await shipper.start()
        capture.add_sink(shipper.submit)
        for i in range(10):
            capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}")
        await wait_until(
            lambda: (
                len(server.stream_lines("killed-worker", killed["stream_id"])) >= count
                and len(server.stream_lines("w2", capture.stream_id)) >= 10
            )
        )
        assert await shipper.close(timeout=5)
        await client.aclose()
    finally:
        await server.stop()
    assert_exactly_once_in_order(server, "killed-worker", killed["stream_id"], count)
    assert_exactly_once_in_order(server, "w2", capture.stream_id, 10)
    assert {
        line["run_id"] for line in server.stream_lines("killed-worker", killed["stream_id"])
    } == {"run-killed"}
    assert list(spool.iterdir()) == []  # the dead process's spool is gone once delivered


async def test_close_keeps_what_it_could_not_send_for_the_next_start(tmp_path: Path) -> None:
    server = await down_server()
    spool = tmp_path / "spool"
    capture = LogCapture(echo=False)
    first, client = shipper_for(server.url, spool, capture.stream_id)
    await first.start()
    capture.add_sink(first.submit)
    for i in range(50):
        capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}")
    assert await first.close(timeout=0.3) is False
    await client.aclose()
    capture.emit(KEY, level="INFO", stream="stdout", message="after close: dropped, counted")
    assert first.stats.dropped == 1
    assert any((spool / capture.stream_id).glob("*.jsonl"))

    await server.start()
    try:
        second, client = shipper_for(server.url, spool, "next-start", worker="w1")
        await second.start()
        await wait_until(lambda: len(server.stream_lines("w1", capture.stream_id)) >= 50)
        assert await second.close(timeout=5)
        await client.aclose()
    finally:
        await server.stop()
    assert_exactly_once_in_order(server, "w1", capture.stream_id, 50)
    assert list(spool.iterdir()) == []


async def test_the_spool_of_a_live_process_is_left_to_it(
    server: FakeControlPlane, tmp_path: Path
) -> None:
    """Two workers on one machine share the spool root: each sends only its own stream, until
    the other has ended."""
    spool = tmp_path / "spool"
    down = await down_server()
    one_capture = LogCapture(echo=False)
    one, one_client = shipper_for(down.url, spool, one_capture.stream_id, worker="one")
    await one.start()
    one_capture.add_sink(one.submit)
    for i in range(20):
        one_capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}")
    await wait_until(lambda: one.stats.spooled == 20)

    two_capture = LogCapture(echo=False)
    two, two_client = shipper_for(server.url, spool, two_capture.stream_id, worker="two")
    await two.start()
    two_capture.add_sink(two.submit)
    for i in range(5):
        two_capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}")
    await wait_until(lambda: two.pending == 0)
    assert server.stream_lines("one", one_capture.stream_id) == []  # "one" is alive: hands off
    assert await two.close(timeout=5)
    assert await one.close(timeout=0.2) is False  # its server is down: the lines stay spooled

    three, three_client = shipper_for(server.url, spool, "three", worker="three")
    await three.start()
    await wait_until(lambda: len(server.stream_lines("one", one_capture.stream_id)) >= 20)
    assert await three.close(timeout=5)
    for client in (one_client, two_client, three_client):
        await client.aclose()
    assert_exactly_once_in_order(server, "one", one_capture.stream_id, 20)
    assert_exactly_once_in_order(server, "two", two_capture.stream_id, 5)


async def test_a_full_spool_drops_the_newest_lines_and_counts_them(tmp_path: Path) -> None:
    server = await down_server()
    capture = LogCapture(echo=False)
    shipper, client = shipper_for(
        server.url, tmp_path / "spool", capture.stream_id, max_spool_bytes=20_000
    )
    await shipper.start()
    capture.add_sink(shipper.submit)
    capture.emit(KEY, level="INFO", stream="stdout", message="line 0")
    await wait_until(lambda: shipper.stats.failures >= 1)  # offline: lines go to the spool
    count = 1000
    for i in range(1, count):
        capture.emit(KEY, level="INFO", stream="stdout", message=f"line {i}")
    assert shipper.stats.dropped > 0
    await server.start()
    try:
        await wait_until(lambda: shipper.pending == 0)
        assert await shipper.close(timeout=5)
        await client.aclose()
    finally:
        await server.stop()
    kept = count - shipper.stats.dropped
    assert 100 < kept < count  # about 20 kB of ~150-byte lines
    assert_exactly_once_in_order(server, "w1", capture.stream_id, kept)  # the oldest are kept
