"""An MMoE click/conversion model for the ``train`` and ``infer`` executors, and toy CTR data.

``mmoe`` is the ``model: "ctr_model:mmoe"`` factory of the example pipeline: shared experts over
the concatenated embeddings of the sparse (categorical id) columns and the dense columns, and one
softmax gate and one tower per task (Ma et al., KDD 2018). ``forward(batch)`` takes the
``dict[str, Tensor]`` batches ``train`` builds and returns logits ``(B, T)``.

``make_ctr_data`` writes synthetic impressions whose labels depend on the features (a hidden
per-category weight plus a dense term), so a model that learns shows an AUC well above 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SPARSE = {"user_bucket": 1000, "item": 500, "category": 40, "hour": 24}
DENSE = ["price", "user_ctr"]
TASKS = ["click", "conversion"]


def mmoe(
    sparse: dict[str, int] | None = None,
    dense: list[str] | None = None,
    num_experts: int = 4,
    expert_dim: int = 32,
    tasks: list[str] | None = None,
    embed_dim: int = 8,
    tower_dim: int = 16,
) -> Any:
    """An MMoE ``nn.Module`` (``sparse``: column -> cardinality; ids are taken modulo it)."""
    import torch
    from torch import nn

    sparse = dict(SPARSE if sparse is None else sparse)
    dense = list(DENSE if dense is None else dense)
    tasks = list(TASKS if tasks is None else tasks)

    class MMoE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sparse = sparse
            self.dense = dense
            self.embeddings = nn.ModuleDict(
                {name: nn.Embedding(size, embed_dim) for name, size in sparse.items()}
            )
            width = embed_dim * len(sparse) + len(dense)
            self.experts = nn.ModuleList(
                nn.Sequential(nn.Linear(width, expert_dim), nn.ReLU()) for _ in range(num_experts)
            )
            self.gates = nn.ModuleList(nn.Linear(width, num_experts) for _ in tasks)
            self.towers = nn.ModuleList(
                nn.Sequential(nn.Linear(expert_dim, tower_dim), nn.ReLU(), nn.Linear(tower_dim, 1))
                for _ in tasks
            )

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            parts = [
                self.embeddings[name](batch[name] % size) for name, size in self.sparse.items()
            ]
            if self.dense:
                parts.append(torch.stack([batch[name].float() for name in self.dense], dim=1))
            x = torch.cat(parts, dim=1)
            experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # B, E, D
            outputs = []
            for gate, tower in zip(self.gates, self.towers, strict=True):
                weights = torch.softmax(gate(x), dim=1).unsqueeze(2)  # B, E, 1
                outputs.append(tower((weights * experts).sum(dim=1)))
            return torch.cat(outputs, dim=1)  # B, T

    return MMoE()


def make_ctr_data(
    path: str | Path,
    rows: int,
    *,
    seed: int = 0,
    files: int = 1,
    row_group_size: int = 65536,
) -> Path:
    """Write ``rows`` synthetic impressions as parquet under ``path`` (``files`` part files).

    Columns: ``request_id`` (int64, unique), the ``SPARSE`` id columns (int64), the ``DENSE``
    float32 columns, and the labels ``click`` and ``conversion`` (float32 0/1). The same ``seed``
    gives the same hidden weights, so data made with different seeds share one signal.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden = np.random.default_rng(12345)  # the signal: the same for every seed
    weights = {name: hidden.normal(0, 1.0, size) for name, size in SPARSE.items()}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files)
    for index in range(files):
        n = max(0, min(per_file, rows - index * per_file))
        columns: dict[str, Any] = {
            "request_id": np.arange(index * per_file, index * per_file + n, dtype=np.int64)
        }
        logit = np.full(n, -1.0)
        for name, size in SPARSE.items():
            ids = rng.integers(0, size, n)
            columns[name] = ids.astype(np.int64)
            logit += weights[name][ids]
        price = rng.gamma(2.0, 1.0, n).astype(np.float32)
        user_ctr = rng.beta(2, 8, n).astype(np.float32)
        columns["price"], columns["user_ctr"] = price, user_ctr
        logit += 4.0 * (user_ctr - 0.2) - 0.3 * price
        click = rng.random(n) < 1 / (1 + np.exp(-logit))
        conversion = click & (rng.random(n) < 1 / (1 + np.exp(-(logit - 1.5))))
        columns["click"] = click.astype(np.float32)
        columns["conversion"] = conversion.astype(np.float32)
        table = pa.table(columns)
        pq.write_table(table, path / f"part_{index}.parquet", row_group_size=row_group_size)
    return path
