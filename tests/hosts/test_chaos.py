"""The chaos suite: each fault injected for real on the hosts while a run is in flight.

Every run must end with exactly its ``rows`` ids in the lake (none lost, none duplicated), or
stop in a clear state that ``stageflow runs retry`` completes. Recovery times (fault → the
faulted stage running again, see chaos_harness.py) are recorded and printed at the end of the
session, never asserted. ``CHAOS_REPEATS=10 pytest tests/hosts -k chaos -s`` gives the
figures of docs/operations.md ("Faults and recovery"; the 30 s link cut is repeated
``CHAOS_LINK_REPEATS`` times, default 1); CI repeats each quick fault 3 times.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from chaos_harness import (
    BLOB_MB,
    PULL_WORKERS,
    Chaos,
    chaos_deployment,
    check_rows,
    complete,
    repeats,
    result,
    retry_cli,
    running_again,
    settled,
    submit,
    wait_for,
)
from chaos_steps import blob_sha256
from temporalio.client import Client

from stageflow.engine.runs import run_state
from stageflow.testing.hosts import Unavailable, unavailable
from stageflow.testing.services import start_temporal

pytestmark = pytest.mark.hosts

LINK_CUT_S = float(os.environ.get("CHAOS_LINK_CUT_S", "30"))


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"multi-host harness unavailable: {reason}")
    with chaos_deployment(tmp_path_factory.mktemp("chaos")) as deployment:
        yield deployment


@pytest.fixture
async def client(chaos: Chaos) -> Client:
    chaos.heal()
    chaos.clear_pull_staging()
    return await Client.connect(chaos.temporal.endpoint)


def _run_id(fault: str) -> str:
    return f"chaos-{fault}-{uuid.uuid4().hex[:6]}"


async def test_worker_killed_mid_stage(chaos: Chaos, client: Client) -> None:
    """SIGKILL the worker running `produce` after 2 of 8 parts: another worker resumes it."""
    fault = result("worker SIGKILLed mid-stage")
    for _ in range(repeats(3)):
        run_id = _run_id("kill")
        await submit(client, run_id)
        before = await wait_for(client, run_id, "produce", done=2, unit="parts")
        t0 = time.time()
        chaos.workers[before.worker].kill()
        fault.recovery_s.append(await running_again(client, run_id, "produce", t0, before))
        again = await wait_for(client, run_id, "produce", done=1, unit="parts")
        assert again.worker != before.worker
        chaos.start_worker(before.worker)
        await complete(chaos, client, run_id, fault)


async def test_worker_killed_mid_transfer(chaos: Chaos, client: Client) -> None:
    """SIGKILL the worker fetching `pull`'s 8 MiB input (4 MiB/s): the other pull worker
    fetches it and the run completes."""
    fault = result("worker SIGKILLed mid-transfer (fetching side)")
    for _ in range(repeats(3)):
        run_id = _run_id("transfer")
        await submit(client, run_id)
        before = await wait_for(client, run_id, "pull", done=1, unit="bytes fetched", timeout=90)
        assert before.progress and before.progress["done"] < before.progress["total"]
        t0 = time.time()
        chaos.workers[before.worker].kill()
        fault.recovery_s.append(await running_again(client, run_id, "pull", t0, before))
        chaos.start_worker(before.worker)
        await complete(chaos, client, run_id, fault)


async def test_server_killed(chaos: Chaos, client: Client) -> None:
    """SIGKILL `stageflow server` while `pull` fetches; it is back (same data dir) 3 s later,
    after `pull` needed it for `persist: true`."""
    fault = result("`stageflow server` SIGKILLed, restarted after 3 s")
    fault.note = "stages do not stop: progress (or a retried persist) goes on"
    for _ in range(repeats(3)):
        run_id = _run_id("server")
        await submit(client, run_id)
        before = await wait_for(client, run_id, "pull", done=1, unit="bytes fetched", timeout=90)
        t0 = time.time()
        chaos.server.kill()
        recovery = asyncio.create_task(running_again(client, run_id, "pull", t0, before))
        await asyncio.sleep(3)
        chaos.start_server()
        fault.recovery_s.append(await recovery)
        await complete(chaos, client, run_id, fault)


async def test_temporal_killed(chaos: Chaos, client: Client) -> None:
    """SIGKILL the Temporal dev server mid-`produce`, start it again on the same SQLite file:
    workers reconnect and the run goes on."""
    fault = result("Temporal SIGKILLed, restarted on its SQLite file")
    fault.note = "includes the dev server's restart"
    for _ in range(repeats(3)):
        run_id = _run_id("temporal")
        await submit(client, run_id)
        before = await wait_for(client, run_id, "produce", done=2, unit="parts")
        t0 = time.time()
        chaos.temporal.kill()
        chaos.temporal = start_temporal(chaos.cluster["dataserver"])
        client = await Client.connect(chaos.temporal.endpoint)
        fault.recovery_s.append(await running_again(client, run_id, "produce", t0, before))
        await complete(chaos, client, run_id, fault)


async def test_link_cut(chaos: Chaos, client: Client) -> None:
    """Unplug the worker running `produce` for 30 s: the stage moves to the other worker; the
    cut-off worker's late result, once the link is back, duplicates nothing."""
    fault = result(f"worker's link cut for {LINK_CUT_S:g} s mid-stage")
    for _ in range(int(os.environ.get("CHAOS_LINK_REPEATS", "1"))):
        run_id = _run_id("link")
        await submit(client, run_id)
        before = await wait_for(client, run_id, "produce", done=2, unit="parts")
        host = chaos.cluster[before.worker]
        t0 = time.time()
        host.link_down()
        try:
            fault.recovery_s.append(await running_again(client, run_id, "produce", t0, before))
            final = await complete(chaos, client, run_id, fault, timeout=LINK_CUT_S + 60)
            await asyncio.sleep(max(0.0, t0 + LINK_CUT_S - time.time()))
        finally:
            host.link_up()
        await asyncio.sleep(5)  # the old worker's late completion reaches Temporal (refused)
        check_rows(chaos, final, fault)  # again, once the late result could have landed
        chaos.workers[before.worker].stop()  # a fresh connection for what follows
        chaos.start_worker(before.worker)


async def test_netem_latency_and_loss(chaos: Chaos, client: Client) -> None:
    """100 ms latency and 5 % loss on both pull workers (every transfer crosses them)."""
    fault = result("100 ms latency + 5 % loss (netem) on the pull workers")
    try:
        for name in PULL_WORKERS:
            chaos.cluster[name].netem(delay_ms=100, loss_pct=5)
    except Unavailable as exc:
        fault.note = "not measured here: kernel lacks sch_netem"
        pytest.skip(str(exc))
    fault.note = "no stage restarts expected: time is the run's"
    try:
        for _ in range(repeats(2)):
            run_id = _run_id("netem")
            t0 = time.time()
            await submit(client, run_id)
            await complete(chaos, client, run_id, fault, timeout=180)
            fault.recovery_s.append(time.time() - t0)
    finally:
        for name in PULL_WORKERS:
            chaos.cluster[name].netem()


def _fill(staging: Path, leave_mb: int) -> Path:
    """A file that leaves ``leave_mb`` MiB free on ``staging``'s filesystem."""
    filler = staging.parent / "filler.bin"
    stat = os.statvfs(staging)
    size = stat.f_bavail * stat.f_frsize - leave_mb * 1024 * 1024
    with open(filler, "wb") as out:
        os.posix_fallocate(out.fileno(), 0, size)
    return filler


async def test_staging_full(chaos: Chaos, client: Client, tmp_path: Path) -> None:
    """The pull workers' staging has 3 MiB left for an 8 MiB input: `pull` fails with a clear
    DiskFullError and leaves nothing partial; once space is freed, `runs retry` completes."""
    fault = result("worker's staging filesystem full")
    fault.note = "stops (DiskFullError); time: retry → pull running"
    fillers = [_fill(chaos.staging(name), leave_mb=3) for name in PULL_WORKERS]
    run_id = _run_id("full")
    try:
        await submit(client, run_id)
        failed = await settled(client, run_id, timeout=90)
    finally:
        for filler in fillers:
            filler.unlink()
    assert failed.status == "failed"
    pull = failed.stages["pull"]
    assert pull.error_type == "DiskFullError", pull
    assert "no space left" in (pull.error or "") and "free some space" in (pull.error or "")
    sha = blob_sha256(run_id, BLOB_MB)
    for name in PULL_WORKERS:
        store = chaos.staging(name)
        assert not (store / "objects" / sha[:2] / sha).exists()
        assert not list((store / "partial").glob(f"{sha}*")), f"partial data left on {name}"
    t0 = time.time()
    retry_cli(chaos, run_id, tmp_path / "operator")
    fault.recovery_s.append(await _started_after(client, run_id, "pull", t0))
    await complete(chaos, client, run_id, fault)


async def _started_after(client: Client, run_id: str, stage: str, t0: float) -> float:
    """Seconds from ``t0`` (the retry) until the retried run's ``stage`` started."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = await run_state(client, run_id)
        started = state.stages[stage].started_at
        if started and datetime.fromisoformat(started).timestamp() > t0:
            return datetime.fromisoformat(started).timestamp() - t0
        if state.status != "running":
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stage} did not start again after the retry: {state}")


async def test_corrupt_chunk(chaos: Chaos, client: Client, tmp_path: Path) -> None:
    """Flip bytes in one chunk of the blob in the producing worker's store (its only copy)
    before `pull` fetches it: the worker, asked to verify its copy, quarantines it, and the run
    stops naming the object as no longer served anywhere; `runs retry`, with nothing removed
    by hand, makes it again and completes with exact rows."""
    fault = result("stored artifact chunk corrupted")
    fault.note = "stops (no longer served: quarantined); time: retry → pull running"
    run_id = _run_id("corrupt")
    await submit(client, run_id)
    before = await wait_for(client, run_id, "produce", done=1, unit="parts")
    sha = blob_sha256(run_id, BLOB_MB)
    objects = chaos.staging(before.worker) / "objects" / sha[:2]
    quarantine = chaos.staging(before.worker) / "quarantine"
    held = set(quarantine.glob(f"*-{sha}"))
    with open(objects / sha, "r+b") as blob:  # chunk 3 of 8 (1 MiB chunks)
        blob.seek(3 * 1024 * 1024 + 100)
        original = blob.read(16)
        blob.seek(3 * 1024 * 1024 + 100)
        blob.write(bytes(b ^ 0xFF for b in original))
    failed = await settled(client, run_id, timeout=90)
    assert failed.status == "failed"
    pull = failed.stages["pull"]
    assert pull.error_type == "TransferError", pull
    assert sha in (pull.error or "") and "no longer served anywhere" in (pull.error or "")
    assert not (objects / sha).exists() and not (objects / f"{sha}.chunks").exists()
    moved = set(quarantine.glob(f"*-{sha}")) - held
    assert len(moved) == 1, "the producing worker quarantined its corrupt copy"
    assert next(iter(moved)).with_name(f"{next(iter(moved)).name}.chunks").exists()
    t0 = time.time()
    retry_cli(chaos, run_id, tmp_path / "operator")  # no operator step before it
    fault.recovery_s.append(await _started_after(client, run_id, "pull", t0))
    await complete(chaos, client, run_id, fault)
