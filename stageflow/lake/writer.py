"""Installing one day of a lake table, all or nothing.

A partition is assembled in a temp dir inside its dataset dir (hard links to the data
server's store objects, which never change), checked (parquet footers readable, one schema,
the expected row count), described by its ``_schema.json``, and only then renamed into place:

* ``overwrite``: the old partition is renamed aside, the new one renamed in, the old one
  deleted. A crash between the two renames leaves the old partition under ``.old-<date>-…``;
  ``recover`` (run before every write and listing) renames it back. So a reader finds the old
  partition or the new one, never a mix.
* ``append``: the new partition is the old one's files (hard links) plus the new parts
  numbered after them, installed the same way, so an append is as atomic as an overwrite.

Leftover ``.tmp-*`` dirs of a crashed write are removed by the next write. Writers of one
dataset take an ``flock`` on ``<dataset>/.lock``, so two loads never interleave.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from stageflow.errors import LakeError
from stageflow.executors.parquet_io import dataset_files, part_name
from stageflow.lake.layout import SCHEMA_FILE, PartitionKey, TableKey
from stageflow.lake.schema import arrow_fields, read_schema, table_summary, write_json_atomic
from stageflow.transfer._fs import fsync_dir
from stageflow.transfer.manifest import DirEntry, DirManifest
from stageflow.transfer.store import ContentStore

__all__ = ["Mode", "install_partition", "list_partitions", "partition_manifest", "recover"]

Mode = Literal["overwrite", "append"]
Step = Callable[[str], None]
_ASIDE = re.compile(r"^\.old-(\d{4}-\d{2}-\d{2})-[0-9a-f]+$")
_FILE_MODE = 0o644


@contextlib.contextmanager
def _locked(dataset_dir: Path, *, blocking: bool = True) -> Iterator[bool]:
    dataset_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(dataset_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def recover(lake: Path, table: TableKey) -> None:
    """Finish what a crashed write left: put an aside partition back, drop temp dirs.

    Takes the dataset lock without waiting: if a writer holds it, that writer recovers.
    """
    dataset_dir = table.path(lake)
    if not dataset_dir.is_dir():
        return
    with _locked(dataset_dir, blocking=False) as got:
        if got:
            _recover_locked(lake, table)


def _recover_locked(lake: Path, table: TableKey) -> None:
    dataset_dir = table.path(lake)
    changed = False
    for entry in sorted(dataset_dir.iterdir()):
        aside = _ASIDE.match(entry.name)
        if aside:
            final = PartitionKey(table, dt.date.fromisoformat(aside.group(1))).path(lake)
            if final.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:  # crashed between the two renames: the old partition goes back
                os.rename(entry, final)
                changed = True
        elif entry.name.startswith(".tmp-") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    if changed:
        _write_table_schema(lake, table)


def list_partitions(lake: Path, table: TableKey) -> list[tuple[Path, dict[str, Any]]]:
    """Every installed partition of ``table`` (sorted by date) with its ``_schema.json``."""
    recover(lake, table)
    found = []
    root = table.path(lake)
    for schema in sorted(root.glob(f"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/{SCHEMA_FILE}")):
        found.append((schema.parent, read_schema(schema)))
    return found


def partition_manifest(files: list[dict[str, Any]], *, prefix: str = "") -> DirManifest:
    """The ``kind: dir`` manifest of a partition's files (as its ``_schema.json`` lists them),
    optionally under ``prefix/`` (to build a whole table's manifest from its partitions')."""
    lead = f"{prefix}/" if prefix else ""
    entries = (
        DirEntry(f"{lead}{f['name']}", f["sha256"], int(f["size"]), _FILE_MODE) for f in files
    )
    return DirManifest(tuple(sorted(entries, key=lambda e: e.path)))


def _write_table_schema(lake: Path, table: TableKey) -> dict[str, Any]:
    root = table.path(lake)
    parts = [
        read_schema(p)
        for p in sorted(root.glob(f"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/{SCHEMA_FILE}"))
    ]
    summary = table_summary(table.zone, table.dataset, parts)
    write_json_atomic(root / SCHEMA_FILE, summary)
    return summary


def _source_files(store: ContentStore, sha: str, kind: str, into: Path) -> list[tuple[Path, str]]:
    """Hard-link the artifact's parquet files under ``into``: ``(path, object sha)`` in order."""
    if not store.has(sha):
        raise LakeError(
            f"artifact {sha[:12]} is not in the data server's store: upload it first "
            "(the load executor pushes it; `stageflow lake load` uploads it)",
            status=404,
        )
    try:
        if kind == "file":
            store.materialize(sha, "file", into / "data.parquet")
            return [(into / "data.parquet", sha)]
        manifest = store.dir_manifest(sha)
        store.materialize(sha, "dir", into)
    except ValueError as exc:
        raise LakeError(f"artifact {sha[:12]} is not a directory: {exc}", status=400) from None
    except FileNotFoundError as exc:
        raise LakeError(f"{exc}: upload the whole directory first", status=404) from None
    shas = {entry.path: entry.sha256 for entry in manifest.entries}
    return [(f, shas[f.relative_to(into).as_posix()]) for f in dataset_files(into)]


def _footer(path: Path, label: str) -> pq.FileMetaData:
    try:
        return pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(f"{label} is not a readable parquet file: {exc}", status=422) from None


def install_partition(
    lake: Path,
    store: ContentStore,
    *,
    key: PartitionKey,
    sha256: str,
    kind: str = "dir",
    mode: Mode = "overwrite",
    expected_rows: int | None = None,
    run_id: str = "",
    job_id: str = "",
    table_name: str | None = None,
    on_step: Step | None = None,
) -> dict[str, Any]:
    """Install the parquet files of artifact ``sha256`` (in ``store``) as partition ``key``.

    ``expected_rows`` counts the rows this load adds (for ``append``, not the old ones); a
    mismatch raises LakeError and installs nothing. ``on_step`` is called with ``"staged"``,
    ``"aside"`` and ``"installed"`` as the install passes those points (for progress, and
    for tests that crash it there). Returns the partition's ``_schema.json``.
    """
    if mode not in ("overwrite", "append"):
        raise LakeError(f"mode {mode!r:.20}: use overwrite or append", status=400)
    step = on_step or (lambda _name: None)
    dataset_dir = key.table.path(lake)
    final = key.path(lake)
    with _locked(dataset_dir):
        _recover_locked(lake, key.table)
        tmp = dataset_dir / f".tmp-{key.date.isoformat()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            doc = _stage(lake, store, key, tmp, sha256, kind, mode, expected_rows)
            doc.update(run_id=run_id, job_id=job_id, table_name=table_name or key.table.sql_name)
            write_json_atomic(tmp / SCHEMA_FILE, doc)
            fsync_dir(tmp)
            step("staged")
            final.parent.mkdir(parents=True, exist_ok=True)
            aside = None
            if final.exists():
                aside = dataset_dir / f".old-{key.date.isoformat()}-{secrets.token_hex(4)}"
                os.rename(final, aside)
            try:
                if aside is not None:
                    step("aside")
                os.rename(tmp, final)
            except BaseException:
                if aside is not None and not final.exists():
                    os.rename(aside, final)
                raise
            fsync_dir(final.parent)
            step("installed")
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _write_table_schema(lake, key.table)
    return doc


def _stage(
    lake: Path,
    store: ContentStore,
    key: PartitionKey,
    tmp: Path,
    sha256: str,
    kind: str,
    mode: Mode,
    expected_rows: int | None,
) -> dict[str, Any]:
    """Fill ``tmp`` with the partition's files; return its ``_schema.json`` (sans ids)."""
    kept: list[dict[str, Any]] = []
    final = key.path(lake)
    if mode == "append" and (final / SCHEMA_FILE).exists():
        kept = list(read_schema(final / SCHEMA_FILE).get("files", []))
        for item in kept:
            os.link(final / item["name"], tmp / item["name"])
    incoming = _source_files(store, sha256, kind, tmp / ".src")
    if not incoming:
        raise LakeError(
            f"artifact {sha256[:12]} holds no .parquet files: load a directory of parquet "
            "parts (or one parquet file)",
            status=422,
        )
    schema: pa.Schema | None = None
    if kept:
        schema = pq.read_schema(tmp / kept[0]["name"])
    files = list(kept)
    added = 0
    for path, sha in incoming:
        label = path.relative_to(tmp / ".src").as_posix()
        meta = _footer(path, label)
        file_schema = meta.schema.to_arrow_schema()
        if schema is None:
            schema = file_schema
        elif not file_schema.equals(schema):
            raise LakeError(
                f"{label} has columns {arrow_fields(file_schema)}, but the partition has "
                f"{arrow_fields(schema)}: every file of a partition needs one schema "
                "(overwrite the day to change it)",
                status=422,
            )
        name = part_name(len(files))
        os.rename(path, tmp / name)
        size = (tmp / name).stat().st_size
        files.append({"name": name, "sha256": sha, "size": size, "rows": meta.num_rows})
        added += meta.num_rows
    shutil.rmtree(tmp / ".src")
    if expected_rows is not None and added != expected_rows:
        raise LakeError(
            f"row count check failed for {key.table}/{key.date}: the data holds {added} rows, "
            f"{expected_rows} were expected; nothing was loaded",
            status=422,
        )
    assert schema is not None
    manifest = partition_manifest(files)
    info = store.put_bytes(manifest.to_json())
    return {
        "zone": key.table.zone,
        "dataset": key.table.dataset,
        "date": key.date.isoformat(),
        "num_records": sum(int(f["rows"]) for f in files),
        "added_records": added,
        "files": files,
        "artifact": {"sha256": info.sha256, "size": manifest.size},
        "schema": {"fields": arrow_fields(schema)},
        "mode": mode,
        "loaded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
