"""Models and data for the train/infer tests: the example's MMoE, and ones that leave traces.

Importable by in-process workers (tests/executors is on sys.path) and by `stageflow worker`
subprocesses started with ``--path tests/executors``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

from ctr_model import DENSE, SPARSE, TASKS, make_ctr_data, mmoe  # noqa: E402

__all__ = ["DENSE", "SPARSE", "TASKS", "counting_linear", "make_ctr_data", "mmoe", "slow_mmoe"]


def slow_mmoe(delay: float = 0.0, **params: Any) -> Any:
    """The example MMoE, ``delay`` seconds slower per training batch: room to kill a worker."""
    model = mmoe(**params)
    forward = model.forward

    def slowed(batch: Any) -> Any:
        if model.training and delay:
            time.sleep(delay)
        return forward(batch)

    model.forward = slowed
    return model


def counting_linear(log: str, delay: float = 0.0, features: int = 2) -> Any:
    """A linear model over ``features`` dense columns that appends ``pid rows`` to ``log`` for
    every batch it predicts: the test counts which rows were computed, and by whom."""
    import torch
    from torch import nn

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(features, 1)

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            x = torch.stack([v.float() for v in batch.values()], dim=1)
            with open(log, "a") as out:
                out.write(f"{os.getpid()} {x.shape[0]}\n")
            if delay:
                time.sleep(delay)
            return self.linear(x)[:, 0]

    torch.manual_seed(0)
    return Counting()


def fuxi_dnn(feature_map: Any, embedding_dim: int = 8, gpu: int = -1, **kwargs: Any) -> Any:
    """A small FuxiCTR DNN (embeddings -> MLP), written against FuxiCTR 2.3's BaseModel API."""
    from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    class DNN(BaseModel):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(feature_map, model_id="DNN", gpu=gpu, **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.mlp = MLP_Block(
                input_dim=feature_map.sum_emb_out_dim(),
                output_dim=1,
                hidden_units=[32],
                hidden_activations="ReLU",
                output_activation=self.output_activation,
            )
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs: Any) -> Any:
            embedded = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
            return {"y_pred": self.mlp(embedded)}

    return DNN()
