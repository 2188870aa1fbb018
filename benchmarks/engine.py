"""Engine overhead: stageflow's pipeline workflow against plain Temporal SDK code, in one run.

    /work/venv/bin/python benchmarks/engine.py [--repeats 3] [--sequential 20] [--fanout 1000]
        [--in-memory] [--attribute] [--dynamic-config KEY=VALUE ...]

Starts one Temporal dev server (the venv's ``temporal`` binary, never a download; a SQLite file in a
temp dir by default, ``--in-memory`` for none) and measures, alternating the order of the sides on
every repeat:

(a) sequential: N no-op ``python`` stages, each ``needs`` the one before, against a plain workflow
    awaiting N no-op activities one after the other. Figure: ms per stage (lower is better).
(b) fan-out: one stage with ``matrix: {i: ${params.items}}`` over M items, against a plain
    workflow gathering M no-op activities. Figure: stages per second (higher is better).

A figure's time runs from starting the workflow to having its result, seen by the client. Both
sides run in this process: stageflow through ``StageWorker``, the baseline through one plain
``temporalio.worker.Worker`` (workflows and activities on one queue, as plain SDK code is usually
written) with the same ``max_concurrent_activities``, each on its own task queues. Before every
measurement the server is left to go idle, so one run's leftovers do not slow the next.

``--attribute`` adds plain baselines that take on stageflow's Temporal-level choices one at a
time, to tell what the difference is made of: activities on another queue than the workflow (as
stageflow's stage queues are, so no eager activity dispatch), then a 5 s heartbeat timeout (as
every stage activity has). Stageflow against the last of them is the cost of its interpreter,
payloads and executor. One more baseline adds a heartbeat at each activity's start: a no-op stage
never sends one (it finishes before its heartbeat task first runs), any stage that awaits does.

``--dynamic-config KEY=VALUE`` passes dynamic config to the dev server, e.g.
``history.transferProcessorMaxPollRPS=1000``: the default, 20, lets the dev server's one history
shard read its transfer queue (what hands new workflow and activity tasks to matching) 20 times a
second, so once the limiter's burst is spent each such dispatch waits up to ~50 ms. That pacing is
most of a sequential stage's time on a dev server, and it hits whichever side needs more
dispatches per stage.

Figures print as ``name: value unit (baseline value, ratio)``: the median of the repeats, with the
spread (and CPU per stage, where psutil is installed) on the line below.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # noop_steps and plain_workflows live next to this script
    sys.path.insert(0, str(HERE))

import temporalio  # noqa: E402
from noop_steps import noop_activity, noop_heartbeat  # noqa: E402
from plain_workflows import PlainFanout, PlainOptions, PlainSequential  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from stageflow.engine.devserver import (  # noqa: E402
    DEV_SERVER_DYNAMIC_CONFIG,
    find_temporal_binary,
)
from stageflow.engine.routing import WORKFLOW_TASK_QUEUE  # noqa: E402
from stageflow.engine.runs import compile_run, start_run  # noqa: E402
from stageflow.settings import WorkerSettings  # noqa: E402
from stageflow.spec.model import Pipeline, Stage  # noqa: E402
from stageflow.spec.validate import check_pipeline  # noqa: E402
from stageflow.worker.runner import StageWorker  # noqa: E402

try:  # CPU accounting and idle detection; without it: a fixed pause, no CPU figures
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

STAGE_QUEUE = "bench-stageflow"  # stageflow's workflow queue is fixed: WORKFLOW_TASK_QUEUE
PLAIN_QUEUE = "bench-plain"
SPLIT_WORKFLOW_QUEUE = "bench-plain-wf"  # --attribute: workflows here, activities on the next
SPLIT_ACTIVITY_QUEUE = "bench-plain-act"
NOOP_FUNCTION = "noop_steps:noop"
HEARTBEAT_TIMEOUT = 5.0

BASELINE, STAGEFLOW = "plain", "stageflow"
SPLIT = "plain+split-queues"
SPLIT_TIMEOUT = "plain+split-queues+heartbeat-timeout"
SPLIT_BEAT = "plain+split-queues+heartbeat-timeout+1-heartbeat"


# ---------------------------------------------------------------------------------- the server
async def start_server(db_file: Path | None, dynamic_config: list[str]) -> WorkflowEnvironment:
    extra = ["--db-filename", str(db_file)] if db_file is not None else []
    for setting in dynamic_config:
        extra += ["--dynamic-config-value", setting]
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_binary(),
        ui=False,
        dev_server_extra_args=extra,
        dev_server_startup_timeout=timedelta(seconds=60),
    )


class Meter:
    """CPU seconds used by this process (client and workers) and by the dev server."""

    def __init__(self) -> None:
        self._me = psutil.Process() if psutil else None
        self._server = self._me.children(recursive=True) if self._me else []

    def sample(self) -> tuple[float, float]:
        if self._me is None:
            return 0.0, 0.0
        mine = self._me.cpu_times()
        server = 0.0
        for process in self._server:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            server += times.user + times.system
        return mine.user + mine.system, server

    async def settle(self, *, window: float = 0.25, idle: float = 0.1, limit: float = 15.0) -> None:
        """Wait until the server uses less than ``idle`` of a core (at most ``limit`` seconds)."""
        if self._me is None:
            await asyncio.sleep(1.0)
            return
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            before = self.sample()[1]
            await asyncio.sleep(window)
            if self.sample()[1] - before < idle * window:
                return


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
    pipeline = Pipeline(
        name="bench-fanout", params={"items": list(range(n))}, stages={"fan": stage}
    )
    return _checked(pipeline)


def _checked(pipeline: Pipeline) -> Pipeline:
    issues = check_pipeline(pipeline)
    if issues:
        raise SystemExit(f"benchmark pipeline {pipeline.name} is invalid: {issues}")
    return pipeline


# ---------------------------------------------------------------------------------- one run each
async def run_stageflow(client: Client, pipeline: Pipeline, n: int) -> float:
    """Seconds from starting the run to its result."""
    run = compile_run(
        pipeline,
        run_id=f"{pipeline.name}-{uuid.uuid4().hex[:12]}",
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    started = time.perf_counter()
    handle = await start_run(client, run)
    summary = await handle.result()
    elapsed = time.perf_counter() - started
    stages = summary["stages"]
    if summary["status"] != "succeeded" or any(s["status"] != "succeeded" for s in stages.values()):
        raise RuntimeError(f"stageflow run {run.run_id} did not succeed: {summary['status']}")
    ran = len(stages["fan"]["outputs"]) if "fan" in stages else len(stages)
    if ran != n:
        raise RuntimeError(f"stageflow run {run.run_id} ran {ran} stages, not {n}")
    return elapsed


async def run_plain(
    client: Client,
    workflow: Callable[..., Awaitable[int]],
    n: int,
    *,
    task_queue: str = PLAIN_QUEUE,
    options: PlainOptions | None = None,
) -> float:
    started = time.perf_counter()
    done = await client.execute_workflow(
        workflow,
        args=[n, options],
        id=f"bench-plain-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
    )
    elapsed = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"plain workflow returned {done}, expected {n}")
    return elapsed


Runner = Callable[[int], Awaitable[float]]


def sides(client: Client, *, sequential: bool, attribute: bool) -> dict[str, Runner]:
    """How each side runs ``n`` no-op stages of one benchmark; each returns seconds."""
    workflow = PlainSequential.run if sequential else PlainFanout.run
    pipeline = sequential_pipeline if sequential else fanout_pipeline
    variants = {
        SPLIT: PlainOptions(activity_task_queue=SPLIT_ACTIVITY_QUEUE),
        SPLIT_TIMEOUT: PlainOptions(
            activity_task_queue=SPLIT_ACTIVITY_QUEUE, heartbeat_timeout_s=HEARTBEAT_TIMEOUT
        ),
        SPLIT_BEAT: PlainOptions(
            activity_task_queue=SPLIT_ACTIVITY_QUEUE,
            heartbeat_timeout_s=HEARTBEAT_TIMEOUT,
            heartbeat=True,
        ),
    }
    runners: dict[str, Runner] = {
        BASELINE: lambda n: run_plain(client, workflow, n),
        STAGEFLOW: lambda n: run_stageflow(client, pipeline(n), n),
    }
    if attribute:
        for side, options in variants.items():
            runners[side] = functools.partial(
                run_plain, client, workflow, task_queue=SPLIT_WORKFLOW_QUEUE, options=options
            )
    return runners


# ---------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    name: str
    n: int
    unit: str
    higher_is_better: bool
    target: float  # on the ratio stageflow / baseline
    values: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # per stage, ms

    def add(self, side: str, seconds: float, cpu: tuple[float, float]) -> float:
        value = self.n / seconds if self.higher_is_better else seconds * 1000 / self.n
        self.values.setdefault(side, []).append(value)
        per_stage = (cpu[0] * 1000 / self.n, cpu[1] * 1000 / self.n)
        self.cpu.setdefault(side, []).append(per_stage)
        return value

    def median(self, side: str) -> float:
        return statistics.median(self.values[side])

    def line(self, name: str, side: str, against: str) -> str:
        value, base = self.median(side), self.median(against)
        return (
            f"{name}: {value:.1f} {self.unit} "
            f"(baseline {base:.1f} {self.unit}, ratio {value / base:.2f})"
        )

    def lines(self) -> list[str]:
        ours, base = self.values[STAGEFLOW], self.values[BASELINE]
        ratios = [s / b for s, b in zip(ours, base, strict=True)]
        ratio = self.median(STAGEFLOW) / self.median(BASELINE)
        met = ratio >= self.target if self.higher_is_better else ratio <= self.target
        sign = ">=" if self.higher_is_better else "<="
        lines = [
            self.line(self.name, STAGEFLOW, BASELINE),
            f"    median of {len(ours)}: stageflow {_span(ours)}, baseline {_span(base)}, "
            f"per-repeat ratio {min(ratios):.2f}-{max(ratios):.2f}; "
            f"target ratio {sign} {self.target}: {'met' if met else 'MISSED'}",
        ]
        if psutil is not None:
            lines.append(
                "    CPU per stage (worker process + dev server): "
                + ", ".join(f"{side} {self._cpu(side)}" for side in self.values)
            )
        if SPLIT_TIMEOUT in self.values:
            # The difference, one choice at a time: each step against the one before.
            steps = [BASELINE, SPLIT, SPLIT_TIMEOUT, STAGEFLOW]
            for before, after in itertools.pairwise(steps):
                lines.append(self.line(f"{self.name}, step {before} -> {after}", after, before))
            lines.append(
                self.line(
                    f"{self.name}, heartbeat at start (stages that await)",
                    SPLIT_BEAT,
                    SPLIT_TIMEOUT,
                )
            )
        return lines

    def _cpu(self, side: str) -> str:
        mine = statistics.median(c[0] for c in self.cpu[side])
        server = statistics.median(c[1] for c in self.cpu[side])
        return f"{mine:.1f} + {server:.1f} ms"


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


# ---------------------------------------------------------------------------------- the benchmark
async def benchmark(args: argparse.Namespace) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as tmp:
        db_file = None if args.in_memory else Path(tmp) / "temporal.sqlite"
        started = time.perf_counter()
        env = await start_server(db_file, args.dynamic_config)
        try:
            print(
                f"# dev server ({'in-memory' if db_file is None else f'SQLite file {db_file}'}) "
                f"up in {time.perf_counter() - started:.2f}s",
                flush=True,
            )
            return await _with_workers(env.client, args)
        finally:
            await env.shutdown()


async def _with_workers(client: Client, args: argparse.Namespace) -> list[Figure]:
    concurrency = args.concurrency
    stage_worker = StageWorker(
        client,
        task_queues=[STAGE_QUEUE],
        settings=WorkerSettings(concurrency=concurrency, shutdown_grace=5.0),
    )
    plain_workers = [
        Worker(
            client,
            task_queue=PLAIN_QUEUE,
            workflows=[PlainSequential, PlainFanout],
            activities=[noop_activity],
            max_concurrent_activities=concurrency,
        )
    ]
    if args.attribute:  # stageflow's layout: a workflow-only worker and an activity-only one
        plain_workers += [
            Worker(
                client, task_queue=SPLIT_WORKFLOW_QUEUE, workflows=[PlainSequential, PlainFanout]
            ),
            Worker(
                client,
                task_queue=SPLIT_ACTIVITY_QUEUE,
                activities=[noop_activity, noop_heartbeat],
                max_concurrent_activities=concurrency,
            ),
        ]
    plain_tasks = [asyncio.create_task(worker.run()) for worker in plain_workers]
    await stage_worker.__aenter__()
    try:
        return await _measure(client, args)
    finally:
        # Explicit shutdown before the loop closes: stop polling, let running tasks finish.
        await stage_worker.shutdown()
        await asyncio.gather(*(worker.shutdown() for worker in plain_workers))
        await asyncio.gather(*plain_tasks, return_exceptions=True)


async def _measure(client: Client, args: argparse.Namespace) -> list[Figure]:
    meter = Meter()
    benches: list[tuple[Figure, dict[str, Runner]]] = []
    if "sequential" in args.only:
        figure = Figure(
            f"engine.sequential, {args.sequential} no-op stages",
            args.sequential,
            "ms/stage",
            False,
            1.25,
        )
        benches.append((figure, sides(client, sequential=True, attribute=args.attribute)))
    if "fanout" in args.only:
        figure = Figure(
            f"engine.fan-out, {args.fanout} no-op stages", args.fanout, "stages/s", True, 0.8
        )
        benches.append((figure, sides(client, sequential=False, attribute=args.attribute)))

    # Warm up every side (sandbox imports, pollers, sticky caches) with a small run.
    for _, runners in benches:
        for run in runners.values():
            await run(3)

    for repeat in range(args.repeats):
        for figure, runners in benches:
            order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
            report = []
            for side in order:
                await meter.settle()
                before = meter.sample()
                seconds = await runners[side](figure.n)
                after = meter.sample()
                cpu = (after[0] - before[0], after[1] - before[1])
                value = figure.add(side, seconds, cpu)
                report.append(f"{side} {value:.1f}")
            print(
                f"# repeat {repeat + 1}/{args.repeats} {figure.name}: {', '.join(report)} "
                f"{figure.unit}",
                flush=True,
            )
    return [figure for figure, _ in benches]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
        help="max_concurrent_activities of every worker (default: stageflow's setting)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["sequential", "fanout"],
        default=["sequential", "fanout"],
        help="run only these benchmarks",
    )
    parser.add_argument(
        "--attribute",
        action="store_true",
        help="add plain baselines taking on stageflow's queue layout, then heartbeat settings",
    )
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra dev server dynamic config (repeatable), e.g. KEY=VALUE",
    )
    parser.add_argument(
        "--stock-server",
        action="store_true",
        help="run the dev server with Temporal's defaults instead of stageflow's embedded "
        "settings (DEV_SERVER_DYNAMIC_CONFIG)",
    )
    args = parser.parse_args(argv)
    if not args.stock_server:
        args.dynamic_config = [*DEV_SERVER_DYNAMIC_CONFIG, *args.dynamic_config]
    if min(args.repeats, args.sequential, args.fanout, args.concurrency) < 1:
        parser.error("--repeats, --sequential, --fanout and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"# stageflow engine benchmark: temporalio {temporalio.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {args.repeats} repeats, "
        f"max_concurrent_activities={args.concurrency}; stageflow: workflows on "
        f"{WORKFLOW_TASK_QUEUE!r}, stages on {STAGE_QUEUE!r}; plain: {PLAIN_QUEUE!r}"
        f"{'; dynamic config ' + ', '.join(args.dynamic_config) if args.dynamic_config else ''}",
        flush=True,
    )
    figures = asyncio.run(benchmark(args))
    for figure in figures:
        for line in figure.lines():
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
