"""The epoch loop of ``train``: one function that runs as a thread or as each DDP rank.

It knows nothing of Temporal: it reports through ``events`` (a ``queue.Queue`` for a thread, a
multiprocessing queue for ranks) and stops when ``stop`` is set. The stage side
(``train.py``) turns the events into progress, logs, published checkpoints and outputs, while
the loop is already in the next epoch.

Events: ``("progress", done, total)``, ``("epoch", record)`` after rank 0 wrote the epoch's
checkpoint directory, ``("done", None)`` and ``("error", traceback)``.

With ``world > 1`` every rank reads an equal, contiguous share of the rows (the last share is
padded from the start of the data, as ``DistributedSampler`` pads), so all ranks take the same
number of steps. Rows are shuffled within each read chunk, with a generator seeded by
``(seed, epoch, rank)``: an epoch is the same whether it ran the first time or after a resume.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stageflow.executors.python import import_callable
from stageflow.executors.torch_checkpoint import (
    load_model_weights,
    load_optimizer,
    save_checkpoint,
)
from stageflow.executors.torch_data import Dataset, Prefetcher, read_ranges, to_tensors
from stageflow.executors.train_metrics import roc_auc

__all__ = ["TrainJob", "free_port", "rank_ranges", "shaped_logits", "train_process"]

PROGRESS_EVERY = 0.5  # seconds between progress events
CHUNK_ROWS = 65536


@dataclass
class TrainJob:
    """Everything a training thread or rank needs; plain data, so it crosses ``spawn``."""

    model: str
    model_params: dict[str, Any]
    data: str
    features: list[str]
    kinds: dict[str, str]
    labels: list[str]
    loss: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    seed: int
    device: str
    checkpoint_root: str
    validation: str | None = None
    shuffle: bool = True
    start_epoch: int = 0
    resume_dir: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    worker: str = ""
    framework: str = "torch"
    fuxictr: dict[str, Any] | None = None
    """For ``framework: fuxictr``: model class, params and the feature map built for the data."""
    checkpoints: bool = True
    """False only for benchmarks/infer.py, which measures what checkpoints cost."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rank_ranges(rows: int, rank: int, world: int) -> list[tuple[int, int]]:
    """Row ranges of ``rank``'s share: ``ceil(rows / world)`` rows, padded from the start."""
    share = math.ceil(rows / world)
    start = min(rank * share, rows)
    stop = min(start + share, rows)
    ranges = [(start, stop)] if stop > start else []
    pad = share - (stop - start)
    while pad > 0 and rows:
        take = min(pad, rows)
        ranges.append((0, take))
        pad -= take
    return ranges


def train_process(
    rank: int, world: int, job_dict: dict[str, Any], port: int, events: Any, stop: Any
) -> None:
    """Train ``job_dict`` (a ``TrainJob``) as rank ``rank`` of ``world``; report via ``events``."""
    try:
        _train(rank, world, TrainJob(**job_dict), events, stop, port)
    except BaseException:
        events.put(("error", traceback.format_exc()))
        if world == 1:
            return
        raise SystemExit(1) from None


def _train(rank: int, world: int, job: TrainJob, events: Any, stop: Any, port: int) -> None:
    import torch

    dist: Any = None
    if world > 1:
        import torch.distributed

        dist = torch.distributed
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        backend = "nccl" if job.device.startswith("cuda") else "gloo"
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    try:
        device = torch.device(job.device)
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        _epochs(rank, world, job, events, stop, device, dist)
    finally:
        if dist is not None:
            dist.destroy_process_group()


def _epochs(
    rank: int, world: int, job: TrainJob, events: Any, stop: Any, device: Any, dist: Any
) -> None:
    import torch

    torch.manual_seed(job.seed)
    adapter = _adapter(job)
    model = adapter.build(job, device)
    optimizer = _optimizer(job, model.parameters())
    if job.resume_dir:
        load_model_weights(Path(job.resume_dir), model)
        info = _json(Path(job.resume_dir))
        load_optimizer(Path(job.resume_dir), optimizer, info)
    trained = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=ids)
    data = Dataset.open(job.data)
    ranges = rank_ranges(data.num_rows, rank, world)
    share = sum(b - a for a, b in ranges)
    per_epoch = math.ceil(share / job.batch_size)
    total = per_epoch * (job.epochs - job.start_epoch)
    history = list(job.history)
    done, last_report = 0, 0.0
    binary = job.loss == "bce"
    for epoch in range(job.start_epoch, job.epochs):
        started = time.perf_counter()
        trained.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        scores: list[Any] = []
        targets: list[Any] = []
        keep_scores = binary and rank == 0 and not job.validation
        for features, labels in _batches(job, data, ranges, epoch, rank, device):
            if stop.is_set():
                return
            logits, loss = adapter.forward(job, trained, features, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            adapter.before_step(model)
            optimizer.step()
            loss_sum += loss.detach().double() * labels.shape[0]
            seen += labels.shape[0]
            if keep_scores:
                scores.append(logits.detach().float().cpu())
                targets.append(labels.detach().cpu())
            done += 1
            now = time.monotonic()
            if rank == 0 and now - last_report >= PROGRESS_EVERY:
                events.put(("progress", done, total))
                last_report = now
        counts = torch.tensor([seen], dtype=torch.float64, device=device)
        if dist is not None:
            dist.all_reduce(loss_sum)
            dist.all_reduce(counts)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(loss_sum) / max(float(counts), 1.0),
            "rows": int(counts),
        }
        if rank == 0:
            if job.validation:
                val_loss, scores, targets = _evaluate(job, adapter, model, device)
                record["val_loss"] = val_loss
            if binary and scores:
                record.update(_aucs(job.labels, torch.cat(scores), torch.cat(targets)))
        if dist is not None:
            dist.barrier()
        record["seconds"] = round(time.perf_counter() - started, 4)
        record["worker"] = job.worker
        if rank == 0:
            history.append(record)
            record["checkpoint_seconds"] = _save(job, model, optimizer, epoch, history)
            events.put(("progress", done, total))
            events.put(("epoch", record))
    if rank == 0:
        events.put(("done", None))


def _save(job: TrainJob, model: Any, optimizer: Any, epoch: int, history: list[Any]) -> float:
    if not job.checkpoints:
        return 0.0
    started = time.perf_counter()
    directory = Path(job.checkpoint_root) / f"epoch_{epoch}"
    if directory.exists():  # left by an attempt that died before recording it
        import shutil

        shutil.rmtree(directory)
    info = {
        "framework": job.framework,
        "fuxictr": job.fuxictr,
        "epoch": epoch,
        "history": history,
        "model": job.model,
        "model_params": job.model_params,
        "features": job.features,
        "kinds": job.kinds,
        "labels": job.labels,
        "loss": job.loss,
    }
    save_checkpoint(directory, model=model, optimizer=optimizer, info=info)
    return round(time.perf_counter() - started, 4)


def _json(directory: Path) -> dict[str, Any]:
    from stageflow.executors.torch_checkpoint import load_checkpoint_info

    return load_checkpoint_info(directory)


class TorchAdapter:
    """A ``module:factory`` model: ``forward(features) -> logits``, loss from ``job.loss``."""

    @staticmethod
    def build(job: TrainJob, device: Any) -> Any:
        return import_callable(job.model)(**job.model_params).to(device)

    @staticmethod
    def forward(job: TrainJob, model: Any, features: dict[str, Any], labels: Any) -> Any:
        logits = shaped_logits(model(features), len(job.labels))
        return logits, _loss(job.loss, logits, labels)

    @staticmethod
    def before_step(model: Any) -> None:
        return None


def _adapter(job: TrainJob) -> Any:
    if job.framework == "fuxictr":
        from stageflow.executors.train_fuxictr import FuxiAdapter

        return FuxiAdapter
    return TorchAdapter


def _optimizer(job: TrainJob, parameters: Any) -> Any:
    import torch

    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return kinds[job.optimizer](parameters, lr=job.lr, weight_decay=job.weight_decay)


def _batches(
    job: TrainJob,
    data: Dataset,
    ranges: list[tuple[int, int]],
    epoch: int,
    rank: int,
    device: Any,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """(features, labels) batches of ``ranges``, read and shuffled a chunk ahead in a thread."""
    import torch

    columns = [*job.features, *[c for c in job.labels if c not in job.features]]
    chunk_rows = job.batch_size * max(1, CHUNK_ROWS // job.batch_size)
    generator = torch.Generator().manual_seed(job.seed * 1_000_003 + epoch * 1009 + rank)

    def chunks() -> Iterator[tuple[dict[str, Any], Any]]:
        for table in read_ranges(data, columns, ranges, chunk_rows):
            tensors = to_tensors(table, job.features, job.kinds)
            labels = _labels(table, job.labels)
            if job.shuffle:
                order = torch.randperm(table.num_rows, generator=generator)
                tensors = {k: v[order] for k, v in tensors.items()}
                labels = labels[order]
            yield tensors, labels

    with Prefetcher(chunks, depth=2) as prefetched:
        for tensors, labels in prefetched:
            rows = labels.shape[0]
            for at in range(0, rows, job.batch_size):
                batch = {k: v[at : at + job.batch_size].to(device) for k, v in tensors.items()}
                yield batch, labels[at : at + job.batch_size].to(device)


def _labels(table: Any, labels: list[str]) -> Any:
    import torch

    tensors = to_tensors(table, labels, dict.fromkeys(labels, "float"))
    if len(labels) == 1:
        return tensors[labels[0]]
    return torch.stack([tensors[name] for name in labels], dim=1)


def shaped_logits(logits: Any, tasks: int) -> Any:
    if tasks == 1 and logits.dim() == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    expected = 1 if tasks == 1 else 2
    if logits.dim() != expected or (tasks > 1 and logits.shape[1] != tasks):
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)}; with {tasks} label(s) "
            f"train expects {'(batch,)' if tasks == 1 else f'(batch, {tasks})'}"
        )
    return logits


def _loss(kind: str, logits: Any, labels: Any) -> Any:
    import torch.nn.functional as F

    tasks = 1 if logits.dim() == 1 else logits.shape[1]
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, labels) * tasks
    return F.mse_loss(logits, labels) * tasks


def _evaluate(
    job: TrainJob, adapter: Any, model: Any, device: Any
) -> tuple[float, list[Any], list[Any]]:
    """Loss over the validation set, and its scores and labels for the AUC (rank 0 only)."""
    import torch

    assert job.validation is not None
    data = Dataset.open(job.validation)
    model.eval()
    scores, targets = [], []
    loss_sum, seen = 0.0, 0
    with torch.inference_mode():
        eval_job = TrainJob(**{**job.to_dict(), "shuffle": False})
        for features, labels in _batches(eval_job, data, [(0, data.num_rows)], 0, 0, device):
            logits, loss = adapter.forward(job, model, features, labels)
            loss_sum += float(loss) * labels.shape[0]
            seen += labels.shape[0]
            scores.append(logits.float().cpu())
            targets.append(labels.cpu())
    model.train()
    return loss_sum / max(seen, 1), scores, targets


def _aucs(labels: list[str], scores: Any, targets: Any) -> dict[str, Any]:
    if len(labels) == 1:
        return {"auc": roc_auc(scores, targets)}
    per_task = {name: roc_auc(scores[:, i], targets[:, i]) for i, name in enumerate(labels)}
    known = [v for v in per_task.values() if v is not None]
    return {"auc": sum(known) / len(known) if known else None, "auc_tasks": per_task}
