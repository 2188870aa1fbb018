"""Parquet rows as torch batches: ``dict[str, Tensor]``, one tensor per column.

Integer columns become ``long`` tensors (categorical ids a model embeds), floating and boolean
columns ``float32``. Rows are read by global row range (``[start, stop)`` over the dataset's
files in ``dataset_files`` order), which is what lets ``train`` give every DDP rank an equal
shard and ``infer`` start at any part. Reading and conversion run in a background thread a few
chunks ahead (``Prefetcher``), so IO overlaps compute while memory stays bounded by
``depth x chunk``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from stageflow.errors import ConfigError
from stageflow.executors.parquet_io import dataset_files

__all__ = [
    "Dataset",
    "Prefetcher",
    "column_kind",
    "numeric_columns",
    "read_ranges",
    "read_rows",
    "to_tensors",
]

T = TypeVar("T")


def column_kind(dtype: pa.DataType) -> str | None:
    """``"int"`` (-> long), ``"float"`` (-> float32), or None for columns a tensor cannot hold."""
    if pa.types.is_integer(dtype) or pa.types.is_dictionary(dtype):
        return "int"
    if pa.types.is_floating(dtype) or pa.types.is_boolean(dtype) or pa.types.is_decimal(dtype):
        return "float"
    return None


def numeric_columns(schema: pa.Schema) -> list[str]:
    return [field.name for field in schema if column_kind(field.type) is not None]


@dataclass(frozen=True)
class Dataset:
    """The files of a parquet dataset, their row counts and schema (read from footers only)."""

    files: tuple[Path, ...]
    rows: tuple[int, ...]
    schema: pa.Schema

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        try:
            files = dataset_files(Path(path))
        except FileNotFoundError:
            raise ConfigError(f"dataset {str(path)!r} does not exist on this worker") from None
        if not files:
            raise ConfigError(f"dataset {str(path)!r} holds no .parquet file")
        metas = [pq.ParquetFile(f).metadata for f in files]
        schema = pq.read_schema(files[0])
        return cls(tuple(files), tuple(m.num_rows for m in metas), schema)

    @property
    def num_rows(self) -> int:
        return sum(self.rows)

    def check_columns(self, columns: Iterable[str], what: str) -> None:
        missing = [c for c in columns if c not in self.schema.names]
        if missing:
            raise ConfigError(
                f"{what} {missing} not in the dataset (its columns: {self.schema.names})"
            )


def read_rows(
    dataset: Dataset, columns: list[str], start: int, stop: int, chunk_rows: int
) -> Iterator[pa.Table]:
    """Rows ``[start, stop)`` of ``dataset`` as tables of exactly ``chunk_rows`` rows (the last
    may be shorter). Only the row groups that overlap the range are read."""
    return read_ranges(dataset, columns, [(start, stop)], chunk_rows)


def read_ranges(
    dataset: Dataset, columns: list[str], ranges: list[tuple[int, int]], chunk_rows: int
) -> Iterator[pa.Table]:
    """``read_rows`` over several row ranges, one after the other, chunked as one stream."""
    pending: list[pa.Table] = []
    held = 0
    pieces = (
        table
        for start, stop in ranges
        for table in _row_range(dataset, columns, start, stop, chunk_rows)
    )
    for table in pieces:
        pending.append(table)
        held += table.num_rows
        while held >= chunk_rows:
            whole = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            yield whole.slice(0, chunk_rows)
            rest = whole.slice(chunk_rows)
            pending, held = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if held:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]


def _row_range(
    dataset: Dataset, columns: list[str], start: int, stop: int, batch_rows: int
) -> Iterator[pa.Table]:
    offset = 0
    for path, rows in zip(dataset.files, dataset.rows, strict=True):
        if offset >= stop:
            return
        if offset + rows <= start:
            offset += rows
            continue
        parquet = pq.ParquetFile(path)
        groups, first = [], None
        group_offset = offset
        for index in range(parquet.metadata.num_row_groups):
            n = parquet.metadata.row_group(index).num_rows
            if group_offset + n > start and group_offset < stop:
                groups.append(index)
                first = group_offset if first is None else first
            group_offset += n
        if groups and first is not None:
            position = first
            for batch in parquet.iter_batches(
                batch_size=batch_rows, row_groups=groups, columns=columns, use_threads=False
            ):
                lo, hi = max(start - position, 0), min(stop - position, batch.num_rows)
                if hi > lo:
                    yield pa.Table.from_batches([batch.slice(lo, hi - lo)])
                position += batch.num_rows
                if position >= stop:
                    break
        offset += rows


def to_tensors(table: pa.Table, columns: list[str], kinds: dict[str, str]) -> dict[str, Any]:
    """One tensor per column (nulls become 0): ``int`` -> long, ``float`` -> float32."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}
    for name in columns:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = pa.chunked_array([chunk.indices for chunk in column.chunks])
        if column.null_count:
            column = column.fill_null(0)
        array = column.to_numpy()
        dtype = np.int64 if kinds[name] == "int" else np.float32
        out[name] = torch.from_numpy(np.array(array, dtype=dtype, copy=True))
    return out


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, ``depth`` items ahead.

    The producer's exceptions are raised in the consumer. ``close()`` (or leaving a ``with``
    block) stops the producer, also when the consumer gives up early.
    """

    def __init__(self, source: Callable[[], Iterable[T]], depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Callable[[], Iterable[T]]) -> None:
        try:
            for item in source():
                if not self._put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put(("error", exc))
            return
        self._put(("end", None))

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
