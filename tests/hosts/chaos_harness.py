"""The chaos suite's deployment, its runs, and what it measures (tests/hosts/test_chaos.py).

A cluster of its own (faults here must not disturb the other host tests): ``dataserver``
(Temporal on SQLite + ``stageflow server``), ``worker1`` and ``worker2`` (queue ``make`` and the
pipeline workflows), ``worker3`` and ``worker4`` (queue ``pull``; staging on a 64 MiB tmpfs so
that it can fill up; transfers capped at 4 MiB/s so that a fault lands mid-transfer). Chunks
are 1 MiB everywhere, so a transfer has several chunks to resume and to corrupt.

Recovery is read from Temporal itself (the dev server runs on this machine's clock): after a
fault at ``t0``, the faulted stage is *running again* when Temporal shows an attempt of it
started after ``t0``, or its reported progress has moved past its value at ``t0`` (faults that
do not restart the stage: server and Temporal restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from cli_run import REPO, TESTS
from helpers import finish
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from stageflow.engine.runs import compile_run, live_activities, run_handle, start_run
from stageflow.engine.types import RunState
from stageflow.errors import EngineError
from stageflow.executors.parquet_io import dataset_files
from stageflow.spec.validate import load_pipeline
from stageflow.testing.hosts import Cluster, HostSpec
from stageflow.testing.services import (
    Service,
    start_server,
    start_temporal,
    start_worker,
)

SPEC = TESTS / "hosts" / "chaos.yaml"
MAKE_WORKERS = ("worker1", "worker2")
PULL_WORKERS = ("worker3", "worker4")
PULL_DISK_MB = 64
ROWS = 3000
BLOB_MB = 8
WORKER_ENV = {
    "STAGEFLOW_TRANSFER_CHUNK_SIZE": str(1024 * 1024),
    "PYTHONPATH": str(TESTS / "hosts"),
}
PULL_ENV = {"STAGEFLOW_TRANSFER_BANDWIDTH": str(4 * 1024 * 1024)}


def repeats(default: int) -> int:
    """How many times each fault is injected: ``CHAOS_REPEATS`` (for the docs' figures),
    else ``default`` (CI)."""
    value = os.environ.get("CHAOS_REPEATS")
    return max(1, int(value)) if value else default


# --- results ------------------------------------------------------------------------------------


@dataclass
class FaultResult:
    fault: str
    runs: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: list[float] = field(default_factory=list)
    note: str = ""

    def row(self) -> dict[str, Any]:
        times = sorted(self.recovery_s)
        return {
            "fault": self.fault,
            "runs completed": f"{self.completed}/{self.runs}",
            "rows lost/duplicated": f"{self.lost}/{self.duplicated}",
            "p50 s": f"{statistics.median(times):.2f}" if times else "-",
            "p95 s": f"{_p95(times):.2f}" if times else "-",
            "n": len(times),
            "note": self.note,
        }


def _p95(times: list[float]) -> float:
    """The nearest-rank 95th percentile (with few repeats: the largest)."""
    rank = max(1, -(-95 * len(times) // 100))
    return times[rank - 1]


RESULTS: dict[str, FaultResult] = {}


def result(fault: str) -> FaultResult:
    return RESULTS.setdefault(fault, FaultResult(fault))


def report_lines() -> list[str]:
    """The results table (markdown), for the terminal summary and docs/operations.md."""
    if not RESULTS:
        return []
    rows = [r.row() for r in RESULTS.values()]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    path = os.environ.get("CHAOS_REPORT")
    if path:
        Path(path).write_text(json.dumps(rows, indent=2))
    return lines


# --- the deployment -----------------------------------------------------------------------------


@dataclass
class Chaos:
    cluster: Cluster
    token: str
    temporal: Service
    server: Service
    workers: dict[str, Service]

    @property
    def lake(self) -> Path:
        return self.cluster["dataserver"].data_dir / "lake"

    def start_temporal(self) -> None:
        self.temporal = start_temporal(self.cluster["dataserver"])

    def start_server(self) -> None:
        self.server = start_server(
            self.cluster["dataserver"], temporal=self.temporal.endpoint, token=self.token
        )

    def start_worker(self, name: str) -> None:
        pull = name in PULL_WORKERS
        self.workers[name] = start_worker(
            self.cluster[name],
            name=name,
            queues=["pull" if pull else "make"],
            workflows=not pull,
            temporal=self.temporal.endpoint,
            server_url=self.server.endpoint,
            token=self.token,
            paths=[TESTS / "hosts"],
            env={**WORKER_ENV, **(PULL_ENV if pull else {})},
        )

    def heal(self) -> None:
        """Everything up again after a fault (the next test starts from a whole deployment)."""
        if not self.temporal.alive():
            self.start_temporal()
        if not self.server.alive():
            self.start_server()
        for name, worker in list(self.workers.items()):
            if not worker.alive():
                self.start_worker(name)

    def clear_pull_staging(self) -> None:
        """Empty the pull workers' small staging filesystems between runs (every run's blob is
        new, so they would fill up), keeping the store's own directories."""
        for name in PULL_WORKERS:
            staging = self.staging(name)
            for part in ("objects", "partial", "tmp", "inputs", "work"):
                for entry in (staging / part).glob("*"):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

    def staging(self, host: str) -> Path:
        return self.cluster[host].data_dir / "home" / "staging"


@contextlib.contextmanager
def chaos_deployment(root: Path) -> Iterator[Chaos]:
    hosts = [
        "dataserver",
        *MAKE_WORKERS,
        *(HostSpec(n, disk_mb=PULL_DISK_MB) for n in PULL_WORKERS),
    ]
    with Cluster(hosts, root=root) as cluster:
        token = os.urandom(24).hex()
        dataserver = cluster["dataserver"]
        temporal = start_temporal(dataserver)
        server = start_server(dataserver, temporal=temporal.endpoint, token=token)
        chaos = Chaos(cluster, token, temporal, server, {})
        for name in (*MAKE_WORKERS, *PULL_WORKERS):
            chaos.start_worker(name)
        try:
            yield chaos
        finally:
            for service in [chaos.temporal, chaos.server, *chaos.workers.values()]:
                print(f"--- {service.name} on {service.host.name}\n{service.tail(12)}")


# --- runs ---------------------------------------------------------------------------------------


async def submit(client: Client, run_id: str, **params: Any) -> None:
    pipeline = load_pipeline(SPEC)
    if params:
        pipeline = pipeline.model_copy(update={"params": {**pipeline.params, **params}})
    await start_run(client, compile_run(pipeline, run_id=run_id, heartbeat_timeout=5.0))


@dataclass
class Attempt:
    """One stage's activity as Temporal's describe shows it."""

    worker: str
    attempt: int
    state: str
    started: float | None
    progress: dict[str, Any] | None


async def attempt_of(client: Client, run_id: str, stage: str) -> Attempt | None:
    """The stage's pending activity (``stage`` or ``stage@near``), or None when there is none."""
    description = await run_handle(client, run_id).describe()
    live = await live_activities(client, run_id)
    for pending in description.raw_description.pending_activities:
        if pending.activity_id.split("@")[0] != stage:
            continue
        state = PendingActivityState.Name(pending.state).removeprefix("PENDING_ACTIVITY_STATE_")
        started = None
        if pending.HasField("last_started_time") and pending.last_started_time.seconds:
            started = pending.last_started_time.seconds + pending.last_started_time.nanos / 1e9
        activity = live.get(pending.activity_id)
        return Attempt(
            pending.last_worker_identity, pending.attempt, state.lower(), started,
            activity.progress if activity else None,
        )  # fmt: skip
    return None


async def wait_for(
    client: Client, run_id: str, stage: str, *, done: float = 1, unit: str | None = None,
    timeout: float = 60,
) -> Attempt:  # fmt: skip
    """Wait until ``stage`` runs and reports progress ``done`` (of ``unit``) or more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = await attempt_of(client, run_id, stage)
        progress = seen.progress if seen else None
        if (
            seen is not None and seen.state == "started" and progress
            and progress["done"] >= done and (unit is None or progress["unit"] == unit)
        ):  # fmt: skip
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stage} of {run_id} did not reach {done} {unit or ''} in {timeout}s")


async def running_again(
    client: Client, run_id: str, stage: str, t0: float, before: Attempt, *, timeout: float = 60
) -> float:
    """Seconds from ``t0`` until ``stage`` runs again: a new attempt started after ``t0``, or
    its progress moved past ``before``'s (or it completed)."""
    deadline = time.monotonic() + timeout
    done_before = (before.progress or {}).get("done", 0)
    while time.monotonic() < deadline:
        try:
            seen = await attempt_of(client, run_id, stage)
        except Exception:
            await asyncio.sleep(0.1)
            continue
        now = time.time()
        if seen is None:  # the stage completed
            return now - t0
        if seen.state == "started" and seen.started is not None and seen.started > t0:
            return seen.started - t0
        progress = seen.progress or {}
        if (
            seen.state == "started" and seen.attempt == before.attempt
            and progress.get("unit") == (before.progress or {}).get("unit")
            and progress.get("done", 0) > done_before
        ):  # fmt: skip
            return now - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stage} of {run_id} did not run again within {timeout}s of the fault")


# --- the lake -----------------------------------------------------------------------------------


def _partition(lake: Path, zone: str, dataset: str, date: str) -> Path:
    return lake.joinpath(zone, dataset, *date.split("-"))


def check_rows(chaos: Chaos, state: RunState, fault: FaultResult, rows: int = ROWS) -> None:
    """Count lost and duplicated ids in silver and gold against ``rows`` ids of this run."""
    date = state.stages["load"].outputs["date"]
    silver = _partition(chaos.lake, "silver", "chaos_rows", date)
    table = [r for f in dataset_files(silver) for r in pq.read_table(f).to_pylist()]
    ids = [r["id"] for r in table]
    assert {r["run_id"] for r in table} == {state.run_id}, "silver holds another run's rows"
    lost = len(set(range(rows)) - set(ids))
    duplicated = len(ids) - len(set(ids))
    gold = _partition(chaos.lake, "gold", "chaos_by_key", date)
    groups = [r for f in dataset_files(gold) for r in pq.read_table(f).to_pylist()]
    fault.lost += lost
    fault.duplicated += duplicated
    assert (lost, duplicated) == (0, 0), f"silver: {lost} ids lost, {duplicated} duplicated"
    assert sum(g["n"] for g in groups) == rows, groups
    assert sum(g["id_sum"] for g in groups) == sum(range(rows)), groups


async def complete(
    chaos: Chaos, client: Client, run_id: str, fault: FaultResult, timeout: float = 120
) -> RunState:
    """Wait for the run, require success and exact rows, and count it."""
    fault.runs += 1
    final = await settled(client, run_id, timeout=timeout)
    assert final.status == "succeeded", {n: (s.status, s.error) for n, s in final.stages.items()}
    check_rows(chaos, final, fault)
    fault.completed += 1
    chaos.clear_pull_staging()
    return final


async def settled(client: Client, run_id: str, timeout: float = 120) -> RunState:
    """The run's final state; the state query is asked again while a workflow worker that a
    fault cut off still holds the workflow (Temporal then answers with an error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await finish(client, run_id, timeout=max(1.0, deadline - time.monotonic()))
        except EngineError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def retry_cli(chaos: Chaos, run_id: str, home: Path) -> None:
    """``stageflow runs retry RUN``, as an operator would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STAGEFLOW_"))}
    env.update(
        TEMPORAL_ADDRESS=chaos.temporal.endpoint, STAGEFLOW_HOME=str(home),
        STAGEFLOW_TOKEN=chaos.token, PYTHONPATH=str(TESTS),
    )  # fmt: skip
    argv = [sys.executable, "-m", "stageflow", "runs", "retry", run_id]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
