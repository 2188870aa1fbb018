"""``uses: infer``: batch inference over a parquet dataset into ``part_N.parquet`` files.

The model is the ``model`` output of a ``train`` stage (a checkpoint directory), a
``module:factory``, or a local Transformers model. Part ``k`` holds the predictions for input
rows ``[k * rows_per_part, (k+1) * rows_per_part)``, so the work is resumable part by part:

- each finished part is published (and pushed to the data server when there is one and
  ``push_parts`` is on) and recorded in the stage's checkpoint as ``{"parts": {k: ref}}``;
- a retry on the same worker keeps the parts already in its work dir (written under a temp name
  and renamed, so a part that exists is complete); one on another worker fetches the recorded
  parts from wherever they are reachable; any part neither kept nor fetched is computed again.
  Parts are a pure function of the input rows and the model, so every mix of kept, fetched and
  recomputed parts gives the same result.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from stageflow.errors import TransferError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.parquet_io import part_name
from stageflow.executors.torch_env import load, resolve_device
from stageflow.worker.context import StageContext

__all__ = ["InferExecutor", "InferParams", "load_predictor"]

FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class InferParams(ExecutorParams):
    data: str = Field(description="Input rows: a parquet file or directory (artifact or path).")
    model: str | None = Field(
        None, description="A train stage's `model` output (checkpoint dir) or module:factory."
    )
    model_params: dict[str, Any] = Field(default_factory=dict, description="factory(**params).")
    features: list[str] | None = Field(
        None, description="Input columns of a module:factory model (default: numeric columns)."
    )
    output_names: list[str] | None = Field(
        None, description="Names of a module:factory model's outputs (prediction_<name>)."
    )
    activation: Literal["auto", "sigmoid", "none"] = Field(
        "auto", description="auto: sigmoid for models trained with loss bce."
    )
    transformers: str | None = Field(None, description="Local Transformers model directory.")
    text_column: str | None = Field(None, description="Text input of a Transformers model.")
    task: Literal["classification", "embedding"] = "classification"
    max_length: int = Field(256, ge=1, le=1_000_000)
    keep: list[str] = Field(default_factory=list, description="Input columns carried through.")
    batch_size: int = Field(4096, ge=1)
    rows_per_part: int = Field(1_000_000, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    push_parts: bool = Field(
        True, description="Push each part to the data server as it lands (if there is one)."
    )

    @model_validator(mode="after")
    def _one_model(self) -> InferParams:
        if (self.model is None) == (self.transformers is None):
            raise ValueError("give exactly one of `model` and `transformers`")
        if self.transformers is not None and not self.text_column:
            raise ValueError("`transformers` needs `text_column`")
        return self


def load_predictor(params: InferParams, data: Any, device: Any) -> Any:
    """The predictor ``params`` describe (see ``infer_models.py``)."""
    from stageflow.executors.infer_models import TorchPredictor, TransformersPredictor

    if params.transformers is not None:
        assert params.text_column is not None
        data.check_columns([params.text_column], "text_column")
        return TransformersPredictor(
            params.transformers,
            text_column=params.text_column,
            task=params.task,
            max_length=params.max_length,
            device=device,
        )
    assert params.model is not None
    if FACTORY.match(params.model) and not Path(params.model).exists():
        return TorchPredictor.from_factory(
            params.model,
            params.model_params,
            data,
            features=params.features,
            exclude=params.keep,
            output_names=params.output_names,
            activation=params.activation,
            device=device,
        )
    return TorchPredictor.from_checkpoint(
        Path(params.model), activation=params.activation, device=device
    )


class InferExecutor(Executor):
    name = "infer"
    Params = InferParams

    async def run(self, params: InferParams, ctx: StageContext) -> dict[str, Any]:
        from stageflow.executors.infer_parts import part_count, predict_parts
        from stageflow.executors.torch_data import Dataset

        await load("torch")
        started = time.monotonic()
        device = resolve_device(params.device)
        data = await asyncio.to_thread(Dataset.open, params.data)
        data.check_columns(params.keep, "keep column(s)")
        predictor = await asyncio.to_thread(load_predictor, params, data, device)
        out = ctx.output_dir() / "predictions"
        out.mkdir(parents=True, exist_ok=True)
        count = part_count(data.num_rows, params.rows_per_part)
        recorded, kept, fetched = await _restore(ctx, out, count)
        missing = [k for k in range(count) if not (out / part_name(k)).exists()]
        if kept or fetched:
            ctx.logger.info(
                "resuming: %d part(s) kept, %d fetched, %d to compute",
                len(kept),
                len(fetched),
                len(missing),
            )
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        push = bool(params.push_parts and ctx.server_url)
        progress = {"done": count - len(missing)}

        async def record(index: int, path: Path) -> None:
            ref = await ctx.publish(path)
            if push:
                assert ctx.server_url is not None
                ref = await ctx.data_plane.push(ref, ctx.server_url, keep_local=True)
            recorded[str(index)] = ref
            ctx.checkpoint({"parts": dict(recorded), "rows_per_part": params.rows_per_part})

        def on_part(index: int, path: Path, rows: int) -> None:
            progress["done"] += 1
            pending.append(asyncio.run_coroutine_threadsafe(record(index, path), loop))  # type: ignore[arg-type]
            loop.call_soon_threadsafe(ctx.progress, progress["done"], count, "parts")

        stop = threading.Event()
        computing = time.monotonic()
        try:
            rows = await asyncio.to_thread(
                predict_parts,
                predictor,
                data,
                out,
                parts=missing,
                rows_per_part=params.rows_per_part,
                batch_size=params.batch_size,
                keep=params.keep,
                on_part=on_part,
                stop=stop,
            )
        finally:
            stop.set()
        compute_seconds = time.monotonic() - computing
        for future in pending:
            await asyncio.wrap_future(future)
        ref = await ctx.publish(out, "predictions")
        return {
            "predictions": ref,
            "rows": data.num_rows,
            "parts": count,
            "computed_parts": missing,
            "kept_parts": len(kept),
            "fetched_parts": len(fetched),
            "rows_computed": rows,
            "rows_per_s": round(rows / compute_seconds, 1) if compute_seconds > 0 else None,
            "seconds": round(time.monotonic() - started, 3),
        }


async def _restore(
    ctx: StageContext, out: Path, count: int
) -> tuple[dict[str, Any], list[int], list[int]]:
    """Parts already here (kept), and recorded parts fetched back from where they are."""
    state = ctx.resume_state()
    recorded: dict[str, Any] = {}
    if isinstance(state, dict) and isinstance(state.get("parts"), dict):
        recorded = {k: v for k, v in state["parts"].items() if k.isdigit() and int(k) < count}
    kept = [k for k in range(count) if (out / part_name(k)).exists()]
    fetched = []
    for key, ref in sorted(recorded.items(), key=lambda item: int(item[0])):
        path = out / part_name(int(key))
        if path.exists():
            continue
        try:
            await ctx.data_plane.fetch(ref)
        except TransferError as exc:
            ctx.logger.warning("part %s is unreachable (%s): computing it again", key, exc)
            continue
        await asyncio.to_thread(ctx.data_plane.store.materialize, ref["sha256"], "file", path)
        fetched.append(int(key))
    return recorded, kept, fetched
