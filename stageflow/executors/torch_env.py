"""Importing the ``ml`` extra on demand, and picking the device a stage runs on.

torch is imported only when a ``train`` or ``infer`` stage runs, so ``stageflow validate`` and
workers without the extra never pay for it; a missing extra is a ``ConfigError`` naming it.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
from typing import Any

from stageflow.errors import ConfigError

__all__ = ["load", "require", "resolve_device"]

EXTRAS = {"torch": "ml", "safetensors": "ml", "numpy": "ml", "transformers": "hf"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a ``ConfigError`` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top, top)
        raise ConfigError(
            f"this stage needs {top} ({exc}): install it on the worker with "
            f"pip install 'stageflow[{extra}]'"
        ) from None


async def load(*modules: str) -> list[ModuleType]:
    """``require`` each module in a thread: a cold ``import torch`` takes seconds, and on the
    event loop it would stop the stage's heartbeats long enough for the worker to look lost."""
    return [await asyncio.to_thread(require, module) for module in modules]


def resolve_device(name: str) -> Any:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one: an error."""
    torch = require("torch")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU on this worker")
    return torch.device(name)
