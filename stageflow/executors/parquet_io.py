"""Parquet datasets as executors pass them around: a directory of ``part_N.parquet`` files.

One layout for every executor that reads or writes tables (``sql``, ``infer``, ``aggregate``,
``load``), so the output of one is the input of the next without conversion.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PART_GLOB", "count_rows", "dataset_files", "part_name", "write_parts"]

PART_GLOB = "part_*.parquet"
COMPRESSION = "zstd"


def part_name(index: int) -> str:
    """The file name of part ``index``: ``part_0.parquet``, ``part_1.parquet``…"""
    return f"part_{index}.parquet"


def dataset_files(path: Path, suffixes: tuple[str, ...] = (".parquet",)) -> list[Path]:
    """The data files of ``path`` (a file, or a directory searched recursively), in a stable
    order: part files by number, then others by name. Hidden files (``_schema.json``, ``.tmp``)
    are skipped."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    found = [
        f
        for f in path.rglob("*")
        if f.is_file()
        and f.suffix in suffixes
        and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
    ]
    return sorted(found, key=_part_order)


def _part_order(path: Path) -> tuple[str, int, str]:
    stem = path.stem
    if stem.startswith("part_") and stem[5:].isdigit():
        return (str(path.parent), int(stem[5:]), "")
    return (str(path.parent), 1 << 62, path.name)


def count_rows(files: Iterable[Path]) -> int:
    """Rows in parquet ``files``, read from their footers (no data is read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def write_parts(
    batches: Iterable[pa.RecordBatch | pa.Table],
    directory: Path,
    *,
    schema: pa.Schema | None = None,
    rows_per_file: int = 1_000_000,
    start: int = 0,
) -> tuple[list[Path], int]:
    """Write ``batches`` as ``part_{start}.parquet``… of at most ``rows_per_file`` rows each.

    Each part is written to a temporary name and renamed, so a crash never leaves a part that
    looks complete. Returns the files written and the row count. An empty input still writes
    one (empty) part when ``schema`` is given, so downstream readers see the columns.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    rows = 0
    writer: pq.ParquetWriter | None = None
    in_file = 0
    tmp: Path | None = None

    def close() -> None:
        nonlocal writer, tmp
        if writer is not None and tmp is not None:
            writer.close()
            final = directory / part_name(start + len(files))
            tmp.replace(final)
            files.append(final)
        writer, tmp = None, None

    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        offset = 0
        while offset < table.num_rows:
            if writer is None:
                tmp = directory / f".{part_name(start + len(files))}.tmp"
                writer = pq.ParquetWriter(tmp, table.schema, compression=COMPRESSION)
                in_file = 0
            take = min(rows_per_file - in_file, table.num_rows - offset)
            writer.write_table(table.slice(offset, take))
            offset += take
            in_file += take
            rows += take
            if in_file >= rows_per_file:
                close()
    close()
    if not files and schema is not None:
        final = directory / part_name(start)
        pq.write_table(schema.empty_table(), final, compression=COMPRESSION)
        files.append(final)
    return files, rows
