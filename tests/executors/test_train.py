"""`uses: train` in real pipelines: metrics per epoch, resume after SIGKILL, DDP on CPU."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import finish, pipeline, start, wait_until
from ml_models import make_ctr_data
from temporalio.client import Client
from worker_processes import WorkerProcesses

from stageflow.engine import runs
from stageflow.errors import SpecError
from stageflow.spec.validate import parse_pipeline
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

pytest.importorskip("torch")

FEATURES = ["user_bucket", "item", "category", "hour", "price", "user_ctr"]

HERE = Path(__file__).resolve().parent


def train_stage(queue: str, data: Path, **with_: Any) -> dict[str, Any]:
    return {
        "uses": "train",
        "queue": queue,
        "with": {
            "data": str(data),
            "model": "ml_models:mmoe",
            "label": ["click", "conversion"],
            "exclude": ["request_id"],
            "epochs": 3,
            "batch_size": 256,
            "lr": 0.003,
            **with_,
        },
    }


async def test_train_reports_history_auc_and_a_checkpoint_on_the_data_server(
    client: Client,
    queue: str,
    tmp_path: Path,
    data_plane: DataPlane,
    data_server: tuple[str, ContentStore],
) -> None:
    train = make_ctr_data(tmp_path / "train", 8000, seed=1)
    valid = make_ctr_data(tmp_path / "valid", 2000, seed=2)
    server_url, server_store = data_server
    spec = pipeline({"fit": train_stage(queue, train, validation=str(valid))})
    async with StageWorker(
        client, task_queues=[queue], data_plane=data_plane, server_url=server_url
    ):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", state.stages["fit"].error
    out = state.stages["fit"].outputs
    assert [h["epoch"] for h in out["history"]] == [0, 1, 2]
    assert out["resumed_from"] == 0 and out["processes"] == 1
    for record in out["history"]:
        assert record["rows"] == 8000 and record["loss"] > 0 and "val_loss" in record
        assert set(record["auc_tasks"]) == {"click", "conversion"}
    assert out["history"][-1]["auc"] > 0.6  # the synthetic labels are learnable
    assert out["history"][-1]["loss"] < out["history"][0]["loss"]
    assert out["best"]["auc"] == max(h["auc"] for h in out["history"])
    model = out["model"]
    assert model["kind"] == "dir" and server_url in model["locations"]
    manifest = server_store.dir_manifest(model["sha256"])
    names = {entry.path for entry in manifest.entries}
    assert names == {"checkpoint.json", "model.safetensors", "optimizer.safetensors"}
    info_sha = next(e.sha256 for e in manifest.entries if e.path == "checkpoint.json")
    info = json.loads(server_store.path(info_sha).read_bytes())
    assert info["epoch"] == 2 and info["features"] == FEATURES
    assert info["labels"] == ["click", "conversion"] and info["model"] == "ml_models:mmoe"


async def test_sigkilled_training_worker_resumes_after_the_last_epoch_on_another(
    client: Client,
    queue: str,
    tmp_path: Path,
    data_server: tuple[str, ContentStore],
    worker_processes: WorkerProcesses,
) -> None:
    data = make_ctr_data(tmp_path / "train", 4000, seed=1)
    server_url, _ = data_server
    per_epoch = 4000 // 200
    epochs = 6  # enough that the kill, early in epoch 1, lands well before the end
    stage = train_stage(
        queue,
        data,
        model="ml_models:slow_mmoe",
        model_params={"delay": 0.06},
        batch_size=200,
        epochs=epochs,
    )
    stage.update(heartbeat_timeout="2s", retry={"max_attempts": 3, "initial_interval": "200ms"})
    spec = pipeline({"fit": stage})
    first = worker_processes.spawn(
        queue, name="first", paths=[HERE], STAGEFLOW_DATA_SERVER_URL=server_url
    )
    async with StageWorker(client, task_queues=[]):  # the workflow runs here, the stage there

        async def mid_second_epoch() -> bool:
            live = await runs.live_activities(client, run_id)
            progress = live["fit"].progress if "fit" in live else None
            return bool(progress) and progress["done"] >= per_epoch * 1.5

        run_id = await start(client, spec)
        await wait_until(mid_second_epoch, timeout=60)
        await asyncio.sleep(1.0)  # a heartbeat carries epoch 0's checkpoint
        first.send_signal(signal.SIGKILL)
        first.wait()
        worker_processes.spawn(
            queue, name="second", paths=[HERE], STAGEFLOW_DATA_SERVER_URL=server_url
        )  # another home: nothing of the first's store
        state = await finish(client, run_id, timeout=90)
    assert state.status == "succeeded", state.stages["fit"].error
    out = state.stages["fit"].outputs
    resumed = out["resumed_from"]
    assert 1 <= resumed < epochs
    assert [h["epoch"] for h in out["history"]] == list(range(epochs))
    assert [h["worker"] for h in out["history"]] == (
        ["first"] * resumed + ["second"] * (epochs - resumed)
    )
    assert server_url in out["model"]["locations"]


async def test_two_ddp_processes_on_cpu_share_the_rows(
    client: Client, queue: str, tmp_path: Path, data_plane: DataPlane
) -> None:
    data = make_ctr_data(tmp_path / "train", 3001, seed=1)
    spec = pipeline({"fit": train_stage(queue, data, epochs=2, processes=2, device="cpu")})
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec), timeout=120)
    assert state.status == "succeeded", state.stages["fit"].error
    out = state.stages["fit"].outputs
    assert out["processes"] == 2
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    # Each rank reads ceil(3001 / 2) rows; the second share is padded from the start.
    assert all(h["rows"] == 3002 for h in out["history"])
    assert out["model"]["kind"] == "dir"


async def test_fuxictr_model_trains_and_checkpoints_under_the_same_contract(
    client: Client, queue: str, tmp_path: Path, data_plane: DataPlane
) -> None:
    try:
        import fuxictr  # noqa: F401
    except ImportError:
        pytest.skip("fuxictr is not installed (pip install 'stageflow[fuxictr]'; it pulls ray)")
    data = make_ctr_data(tmp_path / "train", 4000, seed=1)
    stage = train_stage(queue, data, label="click", epochs=2, framework="fuxictr")
    del stage["with"]["model"]
    stage["with"]["fuxictr"] = {"model": "ml_models:fuxi_dnn", "params": {"embedding_dim": 8}}
    spec = pipeline({"fit": stage})
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", state.stages["fit"].error
    out = state.stages["fit"].outputs
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    assert out["history"][-1]["auc"] > 0.55
    manifest = data_plane.store.dir_manifest(out["model"]["sha256"])
    assert {e.path for e in manifest.entries} >= {"model.safetensors", "checkpoint.json"}


def test_bad_train_parameters_are_reported_with_line_and_field() -> None:
    text = textwrap.dedent(
        """
        name: p
        stages:
          fit:
            uses: train
            with:
              data: /data/train
              model: "no_colon_here"
              label: click
              epochs: 0
              optimiser: adam
        """
    ).lstrip()
    with pytest.raises(SpecError) as info:
        parse_pipeline(text, "p.yaml")
    found = {issue.field: issue for issue in info.value.issues}
    assert found["stages.fit.with.model"].line == 7
    assert found["stages.fit.with.epochs"].line == 9
    assert found["stages.fit.with.optimiser"].line == 10
    assert "pattern" in found["stages.fit.with.model"].message
