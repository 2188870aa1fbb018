"""``train`` with ``framework: fuxictr``: FuxiCTR models under stageflow's checkpoint contract.

FuxiCTR (``pip install 'stageflow[fuxictr]'``) models are ``nn.Module``s built from a
``FeatureMap``; their ``forward(batch)`` takes a dict of tensors (features and labels) and
returns ``{"y_pred": ...}`` (or ``{"<label>_pred": ...}`` per task for multi-task models such as
MMoE), with the output activation already applied. Here the feature map is built from the
parquet schema (integer columns: ``categorical`` with ``vocab_size`` = max id + 1, read from the
parquet statistics; float columns: ``numeric``), the model is trained by stageflow's own epoch
loop (``train_loop.py``: same batches, DDP, per-epoch safetensors checkpoints, resume) through
FuxiCTR's ``compute_loss``, with its gradient clipping. FuxiCTR's own ``fit``, its
``torch.save`` checkpoints and its ``.pkl`` feature processors are not used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from stageflow.errors import ConfigError
from stageflow.executors.python import import_callable
from stageflow.executors.torch_data import Dataset
from stageflow.executors.train_loop import TrainJob

__all__ = ["FuxiAdapter", "build_model", "prepare_job"]

MAX_GRADIENT_NORM = 10.0


def _require() -> Any:
    try:
        import fuxictr.features
    except ImportError as exc:
        raise ConfigError(
            f"framework: fuxictr needs the fuxictr package ({exc}): "
            "pip install 'stageflow[fuxictr]'"
        ) from None
    return fuxictr.features


def prepare_job(job: TrainJob, fuxi: dict[str, Any]) -> TrainJob:
    """``job`` with the FuxiCTR model class, its params and a feature map for the data."""
    _require()
    data = Dataset.open(job.data)
    features = []
    for name in job.features:
        if job.kinds[name] == "int":
            spec = {"type": "categorical", "source": "", "vocab_size": _max_id(data, name) + 1}
        else:
            spec = {"type": "numeric", "source": ""}
        features.append({name: spec})
    feature_map = {"dataset_id": "stageflow", "features": features, "labels": job.labels}
    return replace(job, fuxictr={**fuxi, "feature_map": feature_map})


def _max_id(data: Dataset, column: str) -> int:
    """The largest id of ``column``: from row-group statistics, else by reading the column."""
    best = 0
    for path in data.files:
        meta = pq.ParquetFile(path).metadata
        index = meta.schema.to_arrow_schema().get_field_index(column)
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(index).statistics
            if stats is not None and stats.has_min_max:
                best = max(best, int(stats.max))
            else:
                values = pq.read_table(path, columns=[column]).column(column)
                best = max(best, int(pc.max(values).as_py() or 0))
                break
    return best


def build_model(info: dict[str, Any], device: Any) -> Any:
    """The FuxiCTR model of a job (or of a checkpoint's ``checkpoint.json``), on ``device``."""
    features_module = _require()
    fuxi = info["fuxictr"]
    spec = fuxi["feature_map"]
    feature_map = features_module.FeatureMap(spec["dataset_id"], data_dir="")
    feature_map.features = OrderedDict(
        (k, v) for entry in spec["features"] for k, v in entry.items()
    )
    feature_map.labels = list(spec["labels"])
    feature_map.default_emb_dim = fuxi.get("params", {}).get("embedding_dim")
    feature_map.num_fields = feature_map.get_num_fields()
    feature_map.set_column_index()
    gpu = device.index if device.type == "cuda" and device.index is not None else -1
    if device.type == "cuda" and gpu == -1:
        gpu = 0
    params = {
        "model_root": "",
        "verbose": 0,
        "metrics": ["AUC", "logloss"],
        "gpu": gpu,
        **fuxi.get("params", {}),
    }
    model = import_callable(fuxi["model"])(feature_map, **params)
    return model.to(device)


class FuxiAdapter:
    """How ``train_loop`` drives a FuxiCTR model (see ``TorchAdapter`` there)."""

    @staticmethod
    def build(job: TrainJob, device: Any) -> Any:
        info = {"fuxictr": job.fuxictr}
        model = build_model(info, device)
        loss = "binary_crossentropy" if job.loss == "bce" else "mse_loss"
        if len(job.labels) > 1:
            model.compile(job.optimizer, [loss] * len(job.labels), job.lr)
        else:
            model.compile(job.optimizer, loss, job.lr)
        return model

    @staticmethod
    def forward(job: TrainJob, model: Any, features: dict[str, Any], labels: Any) -> Any:
        import torch

        inner = getattr(model, "module", model)
        if labels.dim() == 1:
            batch = {**features, job.labels[0]: labels}
        else:
            batch = {**features, **{n: labels[:, i] for i, n in enumerate(job.labels)}}
        out = model(batch)
        loss = inner.compute_loss(out, inner.get_labels(batch))
        if "y_pred" in out:
            scores = out["y_pred"].reshape(-1)
        else:
            scores = torch.cat([out[f"{n}_pred"].reshape(-1, 1) for n in job.labels], dim=1)
        # FuxiCTR applies the output activation itself: probabilities rank like logits do.
        return scores, loss

    @staticmethod
    def before_step(model: Any) -> None:
        import torch

        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRADIENT_NORM)
