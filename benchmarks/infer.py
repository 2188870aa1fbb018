"""The ``infer`` executor against a plain PyTorch loop, and what ``train``'s checkpoints cost.

    /work/venv/bin/python benchmarks/infer.py [--rows 2000000] [--repeats 3]
        [--batch-size 8192] [--train-rows 200000] [--epochs 3]

Writes synthetic CTR data (``examples/ctr_model.py``) into a temp dir and measures, in this
process, alternating the order of the sides on every repeat:

(a) ``infer.rows_per_s``: the example MMoE over ``--rows`` rows, through ``predict_parts`` with a
    ``TorchPredictor`` (what the ``infer`` stage runs in its thread: prefetching reader, model
    under ``inference_mode``, parts written with ``write_parts``), against a plain loop over the
    same model and data: ``pyarrow`` ``iter_batches`` -> tensors -> model -> sigmoid -> one
    ``ParquetWriter`` (zstd), all in one thread. Target: ratio >= 0.95.
(b) ``train.checkpoint_cost``: ``train_process`` (the loop ``train`` runs) for ``--epochs``
    epochs with a checkpoint after every epoch, each then hashed into a store as the stage
    publishes it, against the same loop with checkpoints off: the difference in wall time, as a
    share of the time without. Target: <= 2 %.

Figures print as ``name: value unit (baseline value, ratio)``: the median of the repeats, with
the spread on the line below.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from ctr_model import DENSE, SPARSE, TASKS, make_ctr_data, mmoe  # noqa: E402

from stageflow.executors.infer_models import TorchPredictor  # noqa: E402
from stageflow.executors.infer_parts import part_count, predict_parts  # noqa: E402
from stageflow.executors.torch_data import Dataset  # noqa: E402
from stageflow.executors.train_loop import TrainJob, train_process  # noqa: E402
from stageflow.transfer.store import ContentStore  # noqa: E402

FEATURES = [*SPARSE, *DENSE]
KINDS = {**dict.fromkeys(SPARSE, "int"), **dict.fromkeys(DENSE, "float")}
NAMES = [f"prediction_{t}" for t in TASKS]
ROWS_PER_PART = 1_000_000


def plain_loop(model: Any, data: Path, out: Path, batch_size: int) -> int:
    """What one would write by hand: read, predict, write, one batch after the other."""
    import numpy as np

    rows = 0
    writer = None
    for path in sorted(data.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(
            batch_size=batch_size, columns=["request_id", *FEATURES]
        ):
            tensors = {
                name: torch.from_numpy(
                    np.array(
                        batch.column(name).to_numpy(),
                        dtype=np.int64 if KINDS[name] == "int" else np.float32,
                    )
                )
                for name in FEATURES
            }
            with torch.inference_mode():
                scores = torch.sigmoid(model(tensors)).numpy()
            table = pa.table(
                {"request_id": batch.column("request_id")}
                | {name: scores[:, i] for i, name in enumerate(NAMES)}
            )
            if writer is None:
                writer = pq.ParquetWriter(
                    out / "predictions.parquet", table.schema, compression="zstd"
                )
            writer.write_table(table)
            rows += table.num_rows
    if writer is not None:
        writer.close()
    return rows


def executor_core(model: Any, data: Path, out: Path, batch_size: int) -> int:
    dataset = Dataset.open(data)
    predictor = TorchPredictor(
        model,
        features=FEATURES,
        kinds=KINDS,
        names=list(NAMES),
        sigmoid=True,
        device=torch.device("cpu"),
    )
    parts = list(range(part_count(dataset.num_rows, ROWS_PER_PART)))
    return predict_parts(
        predictor,
        dataset,
        out,
        parts=parts,
        rows_per_part=ROWS_PER_PART,
        batch_size=batch_size,
        keep=["request_id"],
    )


def timed(fn: Any, *args: Any) -> tuple[float, int]:
    started = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - started, rows


def bench_infer(args: argparse.Namespace, root: Path) -> None:
    data = make_ctr_data(root / "score", args.rows, seed=3, files=2)
    torch.manual_seed(0)
    model = mmoe().eval()
    sides = {"plain": plain_loop, "infer": executor_core}
    results: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats + 1):  # the first round is a warm-up
        order = list(sides) if repeat % 2 else list(reversed(sides))
        for name in order:
            out = root / f"out-{name}-{repeat}"
            out.mkdir()
            seconds, rows = timed(sides[name], model, data, out, args.batch_size)
            assert rows == args.rows, (name, rows)
            if repeat:
                results[name].append(rows / seconds)
    mine, base = statistics.median(results["infer"]), statistics.median(results["plain"])
    print(
        f"infer.rows_per_s: {mine:,.0f} rows/s "
        f"(plain loop {base:,.0f} rows/s, ratio {mine / base:.3f})"
    )
    print(
        f"    spread infer {min(results['infer']):,.0f}-{max(results['infer']):,.0f}, plain "
        f"{min(results['plain']):,.0f}-{max(results['plain']):,.0f}; {args.rows:,} rows, "
        f"batch {args.batch_size}, {args.repeats} repeats; target ratio >= 0.95"
    )


def run_train(job: TrainJob) -> list[dict[str, Any]]:
    events: queue.Queue[Any] = queue.Queue()
    train_process(0, 1, job.to_dict(), 0, events, threading.Event())
    records = []
    while not events.empty():
        kind, value, *_ = events.get()
        if kind == "error":
            raise RuntimeError(value)
        if kind == "epoch":
            records.append(value)
    return records


def _train_job(args: argparse.Namespace, data: Path, root: Path, checkpoints: bool) -> TrainJob:
    return TrainJob(
        model="ctr_model:mmoe",
        model_params={},
        data=str(data),
        features=FEATURES,
        kinds={**KINDS, **dict.fromkeys(TASKS, "float")},
        labels=list(TASKS),
        loss="bce",
        epochs=args.epochs,
        batch_size=1024,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        seed=0,
        device="cpu",
        checkpoint_root=str(root),
        checkpoints=checkpoints,
    )


def bench_train(args: argparse.Namespace, root: Path) -> None:
    """Whole training runs with and without per-epoch checkpoints (written and then hashed
    into a store, as the stage does), alternating; the cost is the difference in wall time."""
    data = make_ctr_data(root / "train", args.train_rows, seed=1)
    store = ContentStore(root / "store")
    walls: dict[bool, list[float]] = {True: [], False: []}
    shares, publish = [], []
    for repeat in range(args.repeats + 1):  # the first round is a warm-up (imports, caches)
        order = [True, False] if repeat % 2 else [False, True]
        for checkpoints in order:
            ck_root = root / f"ck-{repeat}-{checkpoints}"
            job = _train_job(args, data, ck_root, checkpoints)
            started = time.perf_counter()
            records = run_train(job)
            hashing = 0.0
            if checkpoints:
                for epoch in range(args.epochs):
                    t0 = time.perf_counter()
                    store.put_dir(ck_root / f"epoch_{epoch}", link=True)
                    hashing += time.perf_counter() - t0
            wall = time.perf_counter() - started
            if not repeat:
                continue
            walls[checkpoints].append(wall)
            if checkpoints:
                publish.append(hashing / args.epochs)
                shares.append(
                    statistics.mean(r["checkpoint_seconds"] / r["seconds"] for r in records)
                )
    a, b = statistics.median(walls[True]), statistics.median(walls[False])
    print(
        f"train.checkpoint_cost: {100 * (a / b - 1):.2f} % of training time "
        f"({args.epochs} epochs: {a:.3f} s with checkpoints, {b:.3f} s without, "
        f"ratio {a / b:.3f})"
    )
    print(
        f"    spread with {min(walls[True]):.3f}-{max(walls[True]):.3f} s, without "
        f"{min(walls[False]):.3f}-{max(walls[False]):.3f} s; {args.train_rows:,} rows; "
        f"target <= 2 %; the write inside the loop alone: {100 * statistics.median(shares):.2f} %"
        f" of epoch time; hashing into the store: {statistics.median(publish):.4f} s per "
        "checkpoint (the stage does it while the next epoch runs; here it is counted in full)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", choices=["infer", "train"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        root = Path(tmp)
        if args.only in (None, "infer"):
            bench_infer(args, root)
        if args.only in (None, "train"):
            bench_train(args, root)


if __name__ == "__main__":
    main()
