"""Training checkpoints as a directory of safetensors and JSON: nothing that can carry code.

A checkpoint crosses machines (a retry on another worker, ``infer`` loading ``train``'s model),
so it is never a pickle::

    model.safetensors      the model's state_dict (shared tensors stored once)
    optimizer.safetensors  the optimizer's tensors, keyed ``state.<param index>.<name>``, and
                           the CPU RNG state as ``rng.cpu``
    checkpoint.json        epoch, history, model factory and params, features and their kinds,
                           labels, loss, and the optimizer's non-tensor state and param groups
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stageflow.errors import StageError

__all__ = [
    "CHECKPOINT_JSON",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "CheckpointError",
    "load_checkpoint_info",
    "load_model_weights",
    "load_optimizer",
    "save_checkpoint",
]

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
FORMAT = 1


class CheckpointError(StageError):
    """A checkpoint directory is incomplete or was written by something else."""

    non_retryable = True


def save_checkpoint(
    directory: Path, *, model: Any, optimizer: Any | None, info: dict[str, Any]
) -> None:
    """Write ``directory`` (created; must be fresh) with the model, optimizer and ``info``."""
    import torch
    from safetensors.torch import save_file, save_model

    directory.mkdir(parents=True, exist_ok=False)
    save_model(model, str(directory / MODEL_FILE))
    meta: dict[str, Any] = {}
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        tensors["rng.cpu"] = torch.get_rng_state()
        save_file(tensors, str(directory / OPTIMIZER_FILE))
    body = {"format": FORMAT, **info, "optimizer": meta}
    (directory / CHECKPOINT_JSON).write_text(json.dumps(body, indent=1, sort_keys=True))


def load_checkpoint_info(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CHECKPOINT_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is not a stageflow training checkpoint (no {CHECKPOINT_JSON}): "
            "pass the `model` output of a `train` stage"
        ) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {info.get('format')!r}")
    return info


def load_model_weights(directory: Path, model: Any) -> None:
    from safetensors.torch import load_model

    load_model(model, str(Path(directory) / MODEL_FILE), strict=True)


def load_optimizer(directory: Path, optimizer: Any, info: dict[str, Any]) -> None:
    """Restore the optimizer's state (and the CPU RNG) saved by ``save_checkpoint``."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(Path(directory) / OPTIMIZER_FILE))
    rng = tensors.pop("rng.cpu", None)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"]))
    if rng is not None:
        torch.set_rng_state(rng)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors: dict[str, Any] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[name] = value
    meta = {"state": plain, "param_groups": state["param_groups"]}
    json.dumps(meta)  # fails here, not half-way through writing, if something is not JSON
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("state", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
