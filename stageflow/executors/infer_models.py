"""What ``infer`` runs: a model wrapped as a predictor that turns rows into prediction columns.

Three sources: the checkpoint directory of a ``train`` stage (its ``checkpoint.json`` names the
factory, params, features and labels), a ``module:factory`` with ``model_params``, or a
Transformers model in a local directory (never downloaded: ``local_files_only=True``).

A predictor splits its work in two: ``prepare(table)`` (tensors from arrow, tokenization) runs in
the reader thread, ahead of time; ``predict(prepared)`` runs the model under
``torch.inference_mode`` and returns ``{column: array}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from stageflow.errors import ConfigError
from stageflow.executors.python import import_callable
from stageflow.executors.torch_data import Dataset, column_kind, numeric_columns, to_tensors

__all__ = ["Predictor", "TorchPredictor", "TransformersPredictor"]


class Predictor:
    """Base: ``columns`` it reads, ``prepare`` (reader thread) and ``predict`` (compute)."""

    columns: list[str]

    def prepare(self, table: pa.Table) -> Any:
        raise NotImplementedError

    def predict(self, prepared: Any) -> dict[str, Any]:
        raise NotImplementedError


class TorchPredictor(Predictor):
    """A torch module whose ``forward(dict[str, Tensor])`` returns ``(B,)`` or ``(B, T)``."""

    def __init__(
        self,
        model: Any,
        *,
        features: list[str],
        kinds: dict[str, str],
        names: list[str],
        sigmoid: bool,
        device: Any,
    ) -> None:
        self.model = model.to(device).eval()
        self.columns = features
        self.kinds = kinds
        self.names = names
        self.sigmoid = sigmoid
        self.device = device

    @classmethod
    def from_checkpoint(cls, directory: Path, *, activation: str, device: Any) -> TorchPredictor:
        from stageflow.executors.torch_checkpoint import load_checkpoint_info, load_model_weights

        info = load_checkpoint_info(directory)
        if info.get("framework") == "fuxictr":
            from stageflow.executors.train_fuxictr import build_model

            model = build_model(info, device)
        else:
            model = import_callable(info["model"])(**info["model_params"])
        load_model_weights(directory, model)
        labels = list(info["labels"])
        names = ["prediction"] if len(labels) == 1 else [f"prediction_{x}" for x in labels]
        sigmoid = activation == "sigmoid" or (activation == "auto" and info["loss"] == "bce")
        if info.get("framework") == "fuxictr":
            sigmoid = activation == "sigmoid"  # FuxiCTR models apply their output activation
        return cls(
            model,
            features=list(info["features"]),
            kinds={k: v for k, v in info["kinds"].items() if k in info["features"]},
            names=names,
            sigmoid=sigmoid,
            device=device,
        )

    @classmethod
    def from_factory(
        cls,
        target: str,
        params: dict[str, Any],
        data: Dataset,
        *,
        features: list[str] | None,
        exclude: list[str],
        output_names: list[str] | None,
        activation: str,
        device: Any,
    ) -> TorchPredictor:
        model = import_callable(target)(**params)
        features = features or [c for c in numeric_columns(data.schema) if c not in exclude]
        data.check_columns(features, "feature column(s)")
        kinds = {}
        for name in features:
            kind = column_kind(data.schema.field(name).type)
            if kind is None:
                raise ConfigError(f"feature column {name!r} is not numeric")
            kinds[name] = kind
        names = ["prediction"] if not output_names else [f"prediction_{x}" for x in output_names]
        return cls(
            model,
            features=features,
            kinds=kinds,
            names=names,
            sigmoid=activation == "sigmoid",
            device=device,
        )

    def prepare(self, table: pa.Table) -> Any:
        return to_tensors(table, self.columns, self.kinds)

    def predict(self, prepared: Any) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in prepared.items()}
            out = self.model(batch)
            if self.model_returns_dict(out):
                out = _fuxi_scores(out, self.names)
            if self.sigmoid:
                out = torch.sigmoid(out)
            out = out.float().cpu()
        if out.dim() == 1:
            out = out.unsqueeze(1)
        if out.shape[1] != len(self.names):
            if len(self.names) == 1 and out.shape[1] > 1:
                self.names = [f"prediction_{i}" for i in range(out.shape[1])]
            else:
                raise ConfigError(
                    f"the model returned {out.shape[1]} outputs per row; expected "
                    f"{len(self.names)} ({', '.join(self.names)})"
                )
        array = out.numpy()
        return {name: array[:, i] for i, name in enumerate(self.names)}

    @staticmethod
    def model_returns_dict(out: Any) -> bool:
        return isinstance(out, dict)


def _fuxi_scores(out: dict[str, Any], names: list[str]) -> Any:
    import torch

    if "y_pred" in out:
        return out["y_pred"].reshape(out["y_pred"].shape[0], -1)
    tasks = [n.removeprefix("prediction_") for n in names]
    return torch.cat([out[f"{t}_pred"].reshape(-1, 1) for t in tasks], dim=1)


class TransformersPredictor(Predictor):
    """A local Transformers model: class probabilities, or mean-pooled embeddings."""

    def __init__(
        self, directory: str, *, text_column: str, task: str, max_length: int, device: Any
    ) -> None:
        from stageflow.executors.torch_env import require

        transformers = require("transformers")
        path = Path(directory)
        if not path.is_dir():
            raise ConfigError(
                f"transformers model {directory!r} is not a directory on this worker: infer only "
                "loads local models (save_pretrained output, or an artifact of one)"
            )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        loader = (
            transformers.AutoModelForSequenceClassification
            if task == "classification"
            else transformers.AutoModel
        )
        self.model = loader.from_pretrained(path, local_files_only=True).to(device).eval()
        self.columns = [text_column]
        self.text_column = text_column
        self.task = task
        self.max_length = max_length
        self.device = device

    def prepare(self, table: pa.Table) -> Any:
        texts = [t if t is not None else "" for t in table.column(self.text_column).to_pylist()]
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def predict(self, prepared: Any) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            inputs = {k: v.to(self.device) for k, v in prepared.items()}
            out = self.model(**inputs)
            if self.task == "classification":
                probs = torch.softmax(out.logits.float(), dim=-1).cpu()
                score, index = probs.max(dim=1)
                id2label = self.model.config.id2label or {}
                labels = [str(id2label.get(int(i), int(i))) for i in index]
                return {"label": pa.array(labels, pa.string()), "score": score.numpy()}
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            hidden = out.last_hidden_state.float()
            pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu().numpy()
        flat = pa.array(pooled.reshape(-1))
        return {"embedding": pa.FixedSizeListArray.from_arrays(flat, pooled.shape[1])}
