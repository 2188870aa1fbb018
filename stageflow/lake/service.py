"""``Lake``: the lake of one data server, as the HTTP routes and the local CLI use it.

Blocking methods (they read parquet footers, hash, rename): the routes call them in threads.
The lake's data files are hard links of objects in the server's ``ContentStore``, which is
how a table or partition is handed out as an ordinary ``kind: dir`` artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stageflow.errors import LakeError
from stageflow.lake.catalog import check_name, read_catalog, register
from stageflow.lake.layout import PartitionKey, TableKey
from stageflow.lake.query import list_tables, run_query
from stageflow.lake.schema import table_summary
from stageflow.lake.writer import Mode, install_partition, list_partitions, partition_manifest
from stageflow.transfer.artifacts import make_ref
from stageflow.transfer.manifest import DirEntry, DirManifest
from stageflow.transfer.store import ContentStore

__all__ = ["Lake", "default_lake_dir"]


def default_lake_dir(data_dir: Path) -> Path:
    """``lake/`` beside a data server's store dir (so ``<home>/lake`` by default): the same
    filesystem, so lake files can be hard links of store objects."""
    return Path(data_dir).parent / "lake"


class Lake:
    """The lake rooted at ``root``, its data files linked from ``store``."""

    def __init__(self, root: Path, store: ContentStore) -> None:
        self.root = Path(root)
        self.store = store
        self.root.mkdir(parents=True, exist_ok=True)

    def _names(self) -> dict[TableKey, list[str]]:
        names: dict[TableKey, list[str]] = {}
        for name, key in read_catalog(self.root).items():
            names.setdefault(key, []).append(name)
        return names

    def tables(self) -> list[dict[str, Any]]:
        """Each table's summary (its table-level ``_schema.json``) with its catalog names."""
        names = self._names()
        found = []
        for key in list_tables(self.root):
            docs = [doc for _path, doc in list_partitions(self.root, key)]
            if docs:
                summary = table_summary(key.zone, key.dataset, docs)
                found.append({**summary, "names": names.get(key, [])})
        return found

    def table(self, key: TableKey, location: str) -> dict[str, Any]:
        """One table with its partitions; each, and the whole table, as a ``kind: dir``
        artifact ref whose objects are in the store (``location``: this server's URL)."""
        parts = list_partitions(self.root, key)
        if not parts:
            raise LakeError(f"no table {key} in the lake: see `stageflow lake ls`", status=404)
        partitions = []
        entries: list[DirEntry] = []
        for path, doc in parts:
            self._ensure_in_store(path, doc)
            prefix = path.relative_to(key.path(self.root)).as_posix()
            entries += partition_manifest(doc["files"], prefix=prefix).entries
            ref = make_ref(
                sha256=doc["artifact"]["sha256"],
                size=int(doc["artifact"]["size"]),
                name=doc["date"],
                kind="dir",
                locations=[location],
            )
            partitions.append({**doc, "path": str(path.relative_to(self.root)), "artifact": ref})
        whole = DirManifest(tuple(sorted(entries, key=lambda e: e.path)))
        info = self.store.put_bytes(whole.to_json())
        summary = table_summary(key.zone, key.dataset, [doc for _p, doc in parts])
        return {
            **summary,
            "names": self._names().get(key, []),
            "partitions": partitions,
            "artifact": make_ref(
                sha256=info.sha256,
                size=whole.size,
                name=key.sql_name,
                kind="dir",
                locations=[location],
            ),
        }

    def load(
        self,
        key: PartitionKey,
        *,
        sha256: str,
        kind: str = "dir",
        mode: Mode = "overwrite",
        expected_rows: int | None = None,
        run_id: str = "",
        job_id: str = "",
        table: str | None = None,
    ) -> dict[str, Any]:
        """Install stored artifact ``sha256`` as partition ``key``; register ``table``."""
        if table is not None:
            check_name(self.root, table, key.table)
        result = install_partition(
            self.root,
            self.store,
            key=key,
            sha256=sha256,
            kind=kind,
            mode=mode,
            expected_rows=expected_rows,
            run_id=run_id,
            job_id=job_id,
            table_name=table,
        )
        if table is not None:
            register(self.root, table, key.table)
        return {**result, "path": str(key.path(self.root).relative_to(self.root))}

    def query(self, sql: str, *, limit: int = 1000) -> dict[str, Any]:
        """One read-only SELECT over every table (see ``stageflow.lake.query``)."""
        return run_query(self.root, sql, limit=limit)

    def _ensure_in_store(self, partition: Path, doc: dict[str, Any]) -> None:
        """Put a partition's files back in the store if garbage collection removed them
        (the lake files are hard links of the objects; linking back costs one hash each)."""
        for item in doc.get("files", []):
            if not self.store.has(item["sha256"]):
                info = self.store.put_file(partition / item["name"], link=True)
                if info.sha256 != item["sha256"]:
                    raise LakeError(
                        f"{partition / item['name']} no longer matches its _schema.json "
                        "(changed on disk): reload that partition",
                        status=500,
                    )
        if not self.store.has(doc["artifact"]["sha256"]):
            self.store.put_bytes(partition_manifest(doc.get("files", [])).to_json())
