"""``uses: train``: a PyTorch training loop over parquet data, checkpointed after every epoch.

The model is a user factory (``model: "module:factory"``, called with ``model_params``) whose
``forward(batch)`` takes ``dict[str, Tensor]`` (one tensor per feature column: ``long`` for
integer columns, ``float32`` for the rest) and returns logits ``(B,)`` or ``(B, T)`` for ``T``
labels. After every epoch the loop writes a checkpoint directory (safetensors + JSON, see
``torch_checkpoint.py``); the stage publishes it, pushes it to the data server when there is one,
and records it as the stage's checkpoint, so a retry on any worker resumes after the last
finished epoch. With several GPUs (or ``processes: N``) it trains with DDP, one process per rank.
``framework: fuxictr`` trains a FuxiCTR model under the same contract (``train_fuxictr.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from stageflow.errors import ConfigError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.torch_env import load, resolve_device
from stageflow.worker.context import StageContext

__all__ = ["TrainExecutor", "TrainParams"]

FACTORY = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class FuxiParams(ExecutorParams):
    model: str = Field(
        pattern=FACTORY,
        description="FuxiCTR model class as module:Class (e.g. model_zoo.multitask.MMoE.src:MMoE).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the model class."
    )


class TrainParams(ExecutorParams):
    data: str = Field(description="Training data: a parquet file or directory (artifact or path).")
    model: str | None = Field(
        None, pattern=FACTORY, description="module:factory returning a torch.nn.Module."
    )
    model_params: dict[str, Any] = Field(default_factory=dict, description="factory(**params).")
    label: str | list[str] = Field(description="Label column, or a list for multi-task models.")
    features: list[str] | None = Field(
        None, description="Feature columns (default: every numeric column but labels/exclude)."
    )
    exclude: list[str] = Field(default_factory=list, description="Columns never used (ids).")
    validation: str | None = Field(None, description="Validation data (AUC and val_loss).")
    loss: Literal["bce", "mse"] = "bce"
    epochs: int = Field(1, ge=1, le=100_000)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    shuffle: bool = Field(True, description="Shuffle rows within each 64k-row read chunk.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    processes: int | None = Field(
        None, ge=1, le=64, description="DDP processes (default: every visible GPU, else 1)."
    )
    framework: Literal["torch", "fuxictr"] = "torch"
    fuxictr: FuxiParams | None = None

    @field_validator("label")
    @classmethod
    def _labels_given(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("label: give one column or a list of distinct columns")
        return value

    @model_validator(mode="after")
    def _framework_has_model(self) -> TrainParams:
        if self.framework == "torch" and self.model is None:
            raise ValueError("`model: module:factory` is required (or framework: fuxictr)")
        if self.framework == "fuxictr" and self.fuxictr is None:
            raise ValueError("framework: fuxictr needs `fuxictr: {model: module:Class}`")
        if self.device.startswith("cuda:") and (self.processes or 1) > 1:
            raise ValueError("a single device (cuda:N) cannot host several DDP processes")
        return self

    @property
    def labels(self) -> list[str]:
        return [self.label] if isinstance(self.label, str) else list(self.label)


class TrainExecutor(Executor):
    name = "train"
    Params = TrainParams

    async def run(self, params: TrainParams, ctx: StageContext) -> dict[str, Any]:
        from stageflow.executors.train_checkpoints import (
            ProcessRunner,
            ThreadRunner,
            drive,
            resume,
        )
        from stageflow.executors.train_loop import TrainJob, free_port, train_process

        torch, _ = await load("torch", "safetensors")
        started = time.monotonic()
        device = resolve_device(params.device)
        world = params.processes or (
            torch.cuda.device_count() if device.type == "cuda" and device.index is None else 1
        )
        job_fields = await asyncio.to_thread(_columns, params)
        root = ctx.output_dir() / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        resumed = await resume(ctx, root)
        job = TrainJob(
            model=params.model or "",
            model_params=params.model_params,
            data=params.data,
            validation=params.validation,
            loss=params.loss,
            epochs=params.epochs,
            batch_size=params.batch_size,
            lr=params.lr,
            optimizer=params.optimizer,
            weight_decay=params.weight_decay,
            seed=params.seed,
            device=str(device),
            shuffle=params.shuffle,
            checkpoint_root=str(root),
            start_epoch=resumed.epoch + 1 if resumed else 0,
            resume_dir=str(resumed.directory) if resumed else None,
            history=resumed.history if resumed else [],
            worker=ctx.worker,
            framework=params.framework,
            **job_fields,
        )
        if params.framework == "fuxictr":
            from stageflow.executors.train_fuxictr import prepare_job

            assert params.fuxictr is not None
            job = await asyncio.to_thread(prepare_job, job, params.fuxictr.model_dump())
        last_ref = resumed.ref if resumed else None
        history = list(job.history)
        publish_seconds = 0.0
        if job.start_epoch < job.epochs:
            args = (job.to_dict(), free_port() if world > 1 else 0)
            runner: Any = (
                ProcessRunner(train_process, world, args)
                if world > 1
                else ThreadRunner(train_process, (0, 1, *args))
            )
            ctx.logger.info(
                "training epochs %d..%d on %s x%d", job.start_epoch, job.epochs - 1, device, world
            )
            result = await drive(ctx, runner, root=root, history=history, last_ref=last_ref)
            history, last_ref = result.history, result.last_ref
            publish_seconds = result.publish_seconds
        ran = [h for h in history if h["epoch"] >= job.start_epoch]
        return {
            "model": last_ref,
            "epochs": params.epochs,
            "resumed_from": job.start_epoch,
            "history": history,
            "best": _best(history),
            "processes": world,
            "device": str(device),
            "seconds": round(time.monotonic() - started, 3),
            "checkpoint_seconds": round(sum(h.get("checkpoint_seconds", 0.0) for h in ran), 4),
            "publish_seconds": round(publish_seconds, 4),
        }


def _columns(params: TrainParams) -> dict[str, Any]:
    """Features, their tensor kinds and labels, checked against the data's schema."""
    from stageflow.executors.torch_data import Dataset, column_kind, numeric_columns

    data = Dataset.open(params.data)
    labels = params.labels
    data.check_columns(labels, "label column(s)")
    data.check_columns(params.exclude, "excluded column(s)")
    skip = {*labels, *params.exclude}
    features = params.features or [c for c in numeric_columns(data.schema) if c not in skip]
    data.check_columns(features, "feature column(s)")
    kinds: dict[str, str] = {}
    for name in [*features, *labels]:
        kind = column_kind(data.schema.field(name).type)
        if kind is None:
            raise ConfigError(
                f"column {name!r} is {data.schema.field(name).type}: train takes numeric "
                "columns only (encode strings as integer ids first, e.g. with a `sql` stage)"
            )
        kinds[name] = kind
    if not features:
        raise ConfigError("no feature columns: name them with `features:`")
    if params.validation:
        Dataset.open(params.validation).check_columns([*features, *labels], "validation column(s)")
    return {"features": features, "kinds": kinds, "labels": labels}


def _best(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not history:
        return None
    if any(isinstance(h.get("auc"), float) for h in history):
        best = max((h for h in history if isinstance(h.get("auc"), float)), key=lambda h: h["auc"])
        return {"epoch": best["epoch"], "auc": best["auc"]}
    key = "val_loss" if all("val_loss" in h for h in history) else "loss"
    best = min(history, key=lambda h: h[key])
    return {"epoch": best["epoch"], key: best[key]}
