"""`uses: infer` in real pipelines: from a train artifact, resume after SIGKILL, Transformers."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import finish, pipeline, start, wait_until
from ml_models import make_ctr_data, mmoe
from temporalio.client import Client
from worker_processes import WorkerProcesses

from stageflow.engine import runs
from stageflow.errors import SpecError
from stageflow.spec.validate import parse_pipeline
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

torch = pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent


def read_parts(store: ContentStore, ref: dict[str, Any], dest: Path) -> pa.Table:
    """The predictions directory of ``ref``, rebuilt from ``store``, as one table in part order."""
    store.materialize(ref["sha256"], "dir", dest)
    files = sorted(dest.glob("part_*.parquet"), key=lambda p: int(p.stem[5:]))
    return pa.concat_tables([pq.read_table(f) for f in files])


async def test_infer_from_the_train_artifact_into_ordered_parts(
    client: Client, queue: str, tmp_path: Path, data_plane: DataPlane
) -> None:
    train = make_ctr_data(tmp_path / "train", 4000, seed=1)
    score = make_ctr_data(tmp_path / "score", 3500, seed=3)
    spec = pipeline(
        {
            "fit": {
                "uses": "train",
                "queue": queue,
                "with": {
                    "data": str(train),
                    "model": "ml_models:mmoe",
                    "label": ["click", "conversion"],
                    "exclude": ["request_id"],
                    "epochs": 2,
                    "batch_size": 256,
                },
            },
            "score": {
                "uses": "infer",
                "queue": queue,
                "needs": ["fit"],
                "with": {
                    "model": "${fit.outputs.model}",
                    "data": str(score),
                    "keep": ["request_id"],
                    "rows_per_part": 1500,
                    "batch_size": 512,
                },
            },
        }
    )
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    out = state.stages["score"].outputs
    assert out["rows"] == 3500 and out["parts"] == 3 and out["computed_parts"] == [0, 1, 2]
    assert out["rows_per_s"] > 0
    table = read_parts(data_plane.store, out["predictions"], tmp_path / "predictions")
    assert table.column_names == ["request_id", "prediction_click", "prediction_conversion"]
    assert table.column("request_id").to_pylist() == list(range(3500))
    # The same numbers as the trained model computes by hand from its checkpoint.
    model_dir = tmp_path / "model"
    data_plane.store.materialize(state.stages["fit"].outputs["model"]["sha256"], "dir", model_dir)
    info = json.loads((model_dir / "checkpoint.json").read_text())
    from safetensors.torch import load_model

    model = mmoe(**info["model_params"])
    load_model(model, str(model_dir / "model.safetensors"))
    rows = pq.read_table(score / "part_0.parquet").slice(0, 100)
    batch = {
        name: torch.tensor(rows.column(name).to_numpy())
        for name in info["features"]
        if name in rows.column_names
    }
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(batch)).numpy()
    got = table.slice(0, 100)
    for i, task in enumerate(info["labels"]):
        column = got.column(f"prediction_{task}").to_numpy()
        assert abs(column - expected[:, i]).max() < 1e-5


async def test_sigkilled_infer_resumes_at_the_first_missing_part(
    client: Client,
    queue: str,
    tmp_path: Path,
    data_server: tuple[str, ContentStore],
    worker_processes: WorkerProcesses,
) -> None:
    data = make_ctr_data(tmp_path / "score", 6000, seed=3)
    log = tmp_path / "batches.log"
    server_url, server_store = data_server
    spec = pipeline(
        {
            "score": {
                "uses": "infer",
                "queue": queue,
                "heartbeat_timeout": "2s",
                "retry": {"max_attempts": 3, "initial_interval": "200ms"},
                "with": {
                    "model": "ml_models:counting_linear",
                    "model_params": {"log": str(log), "delay": 0.3},
                    "features": ["price", "user_ctr"],
                    "data": str(data),
                    "keep": ["request_id"],
                    "rows_per_part": 1000,
                    "batch_size": 250,
                },
            }
        }
    )
    first = worker_processes.spawn(
        queue, name="first", paths=[HERE], STAGEFLOW_DATA_SERVER_URL=server_url
    )
    async with StageWorker(client, task_queues=[]):

        async def two_parts_done() -> bool:
            live = await runs.live_activities(client, run_id)
            progress = live["score"].progress if "score" in live else None
            return bool(progress) and progress["done"] >= 2

        run_id = await start(client, spec)
        await wait_until(two_parts_done, timeout=60)
        await asyncio.sleep(1.0)  # a heartbeat carries the checkpoint with the parts so far
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = worker_processes.spawn(
            queue, name="second", paths=[HERE], STAGEFLOW_DATA_SERVER_URL=server_url
        )  # another home: an empty store
        state = await finish(client, run_id, timeout=90)
    assert state.status == "succeeded", state.stages["score"].error
    out = state.stages["score"].outputs
    fetched = out["fetched_parts"]
    assert fetched >= 2 and out["kept_parts"] == 0
    # The recorded parts came from the data server; the rest were computed, in order, from
    # the first missing part on.
    assert out["computed_parts"] == list(range(fetched, 6))
    counted: dict[int, int] = {}
    for line in log.read_text().splitlines():
        pid, rows = map(int, line.split())
        counted[pid] = counted.get(pid, 0) + rows
    assert counted[second.pid] == 1000 * (6 - fetched) == out["rows_computed"]
    assert counted[first.pid] >= 1000 * fetched
    second_store = ContentStore(tmp_path / "home-second" / "staging")
    table = read_parts(second_store, out["predictions"], tmp_path / "predictions")
    assert table.column("request_id").to_pylist() == list(range(6000))
    for k in range(fetched):  # what the first worker pushed is what the second one used
        assert server_store.has(table_part_sha(second_store, out["predictions"], k))


def table_part_sha(store: ContentStore, ref: dict[str, Any], index: int) -> str:
    manifest = store.dir_manifest(ref["sha256"])
    return next(e.sha256 for e in manifest.entries if e.path == f"part_{index}.parquet")


def tiny_transformers(directory: Path) -> None:
    """A 2-layer BERT with hidden size 32 and a word-level tokenizer, saved for local loading."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["good", "bad", "movie", "plot", "great", "awful", "the", "was"]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]"
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


async def test_tiny_local_transformers_model_classifies_and_embeds(
    client: Client, queue: str, tmp_path: Path, data_plane: DataPlane
) -> None:
    pytest.importorskip("transformers")
    model_dir = tmp_path / "bert"
    tiny_transformers(model_dir)
    texts = ["good movie", "bad plot", "the movie was great", None, "awful"] * 20
    data = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"id": list(range(100)), "text": texts}), data)

    def stage(**with_: Any) -> dict[str, Any]:
        base = {"transformers": str(model_dir), "text_column": "text", "data": str(data)}
        return {"uses": "infer", "queue": queue, "with": {**base, "keep": ["id"], **with_}}

    spec = pipeline(
        {
            "classify": stage(batch_size=16, rows_per_part=60),
            "embed": stage(task="embedding", batch_size=32),
        }
    )
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    classified = state.stages["classify"].outputs
    assert classified["parts"] == 2 and classified["rows"] == 100
    table = read_parts(data_plane.store, classified["predictions"], tmp_path / "classified")
    assert table.column("id").to_pylist() == list(range(100))
    assert set(table.column("label").to_pylist()) <= {"negative", "positive"}
    scores = table.column("score").to_numpy()
    assert ((scores >= 0.5) & (scores <= 1.0)).all()
    embedded = read_parts(
        data_plane.store, state.stages["embed"].outputs["predictions"], tmp_path / "embedded"
    )
    vectors = embedded.column("embedding")
    assert len(vectors) == 100 and vectors.type.list_size == 32
    # Equal texts get equal embeddings, different texts different ones.
    assert vectors[0].as_py() == vectors[5].as_py() != vectors[1].as_py()


def test_bad_infer_parameters_are_reported_with_line_and_field() -> None:
    text = textwrap.dedent(
        """
        name: p
        stages:
          score:
            uses: infer
            with:
              data: /data/score
              transformers: /models/bert
              rows_per_part: 0
              task: summarize
        """
    ).lstrip()
    with pytest.raises(SpecError) as info:
        parse_pipeline(text, "p.yaml")
    found = {issue.field: issue for issue in info.value.issues}
    assert found["stages.score.with.rows_per_part"].line == 8
    assert found["stages.score.with.task"].line == 9
    missing_text = textwrap.dedent(
        """
        name: p
        stages:
          score:
            uses: infer
            with: {data: /d, transformers: /m}
        """
    ).lstrip()
    with pytest.raises(SpecError) as info:
        parse_pipeline(missing_text, "p.yaml")
    (issue,) = info.value.issues
    assert issue.line == 5 and "text_column" in issue.message
