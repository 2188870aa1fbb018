"""The compute core of ``infer``: predictions for chosen parts of a dataset, part by part.

Part ``k`` holds the predictions of input rows ``[k * rows_per_part, (k + 1) * rows_per_part)``
in input order, so any part can be (re)computed on its own: a retry computes exactly the parts
that are missing, wherever they are. Rows are read, converted (``predictor.prepare``) a few
batches ahead in a background thread; the calling thread runs the model and writes each part
with ``parquet_io.write_parts`` (temp name, then rename: a part that exists is complete).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from stageflow.executors.infer_models import Predictor
from stageflow.executors.parquet_io import write_parts
from stageflow.executors.torch_data import Dataset, Prefetcher, read_rows

__all__ = ["part_count", "predict_parts"]

PREFETCH = 4  # batches read and prepared ahead


def part_count(rows: int, rows_per_part: int) -> int:
    return max(1, -(-rows // rows_per_part))


def predict_parts(
    predictor: Predictor,
    data: Dataset,
    out_dir: Path,
    *,
    parts: list[int],
    rows_per_part: int,
    batch_size: int,
    keep: list[str],
    on_part: Callable[[int, Path, int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Compute ``parts`` into ``out_dir/part_<k>.parquet``; returns the rows predicted.

    ``on_part(k, path, rows)`` is called as each part lands. ``stop`` ends the work between
    batches (the part in progress is not written).
    """
    columns = list(dict.fromkeys([*predictor.columns, *keep]))
    total = data.num_rows

    def batches() -> Iterator[tuple[int, pa.Table, Any]]:
        for k in parts:
            start, end = k * rows_per_part, min((k + 1) * rows_per_part, total)
            for table in read_rows(data, columns, start, end, batch_size):
                yield k, table, predictor.prepare(table)

    done = 0
    with Prefetcher(batches, depth=PREFETCH) as prefetched:
        current: int | None = None
        pending: list[pa.Table] = []
        for k, table, prepared in prefetched:
            if stop is not None and stop.is_set():
                return done
            if current is not None and k != current:
                done += _write(out_dir, current, pending, rows_per_part, on_part)
                pending = []
            current = k
            predicted = predictor.predict(prepared)
            columns_out: dict[str, Any] = {name: table.column(name) for name in keep}
            for name, values in predicted.items():
                columns_out[name] = values if _is_arrow(values) else pa.array(values)
            pending.append(pa.table(columns_out))
        if current is not None:
            done += _write(out_dir, current, pending, rows_per_part, on_part)
    return done


def _is_arrow(values: Any) -> bool:
    return isinstance(values, (pa.Array, pa.ChunkedArray))


def _write(
    out_dir: Path,
    index: int,
    tables: list[pa.Table],
    rows_per_part: int,
    on_part: Callable[[int, Path, int], None] | None,
) -> int:
    files, rows = write_parts(tables, out_dir, rows_per_file=rows_per_part, start=index)
    if on_part is not None:
        on_part(index, files[0], rows)
    return rows
