"""``stageflow lake ls|query|load``: look into the lake, query it, load parquet into it.

The lake lives on the data server. With ``--server`` / ``STAGEFLOW_DATA_SERVER_URL`` /
``STAGEFLOW_SERVER_URL`` set, commands talk to it over HTTP; without, they work directly on
this machine's lake (``<home>/lake``, the embedded default of ``stageflow run`` / ``up``).
Each command says which one it used, on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from stageflow.cli.common import console, err_console, run_async
from stageflow.cli.dataplane import deployment_token, staging_store
from stageflow.executors.parquet_io import count_rows, dataset_files
from stageflow.lake.client import LakeClient
from stageflow.lake.layout import PartitionKey, TableKey, parse_date
from stageflow.lake.service import Lake, default_lake_dir
from stageflow.server.settings import ServerSettings
from stageflow.settings import DataSettings, EngineSettings
from stageflow.transfer.store import ContentStore
from stageflow.worker.dataplane import DataPlane

app = typer.Typer(no_args_is_help=True)

_SERVER = typer.Option(
    None, "--server", help="Data server URL (default: STAGEFLOW_DATA_SERVER_URL / _SERVER_URL)."
)
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


class _Target:
    """The lake a command works on: a data server over HTTP, or the local directory."""

    def __init__(self, server: str | None) -> None:
        self.home = EngineSettings().home
        self.url = server or DataSettings().server_url
        if self.url:
            self.client: LakeClient | None = LakeClient(self.url, deployment_token(self.home))
            err_console.print(f"lake: {self.url}", highlight=False, soft_wrap=True)
            return
        self.client = None
        settings = ServerSettings()
        data_dir = settings.data_dir or self.home / "server"
        self.local = Lake(settings.lake_dir or default_lake_dir(data_dir), ContentStore(data_dir))
        err_console.print(
            f"lake: {self.local.root} (local; set STAGEFLOW_SERVER_URL to use a data server)",
            highlight=False,
            soft_wrap=True,
        )

    async def tables(self) -> list[dict[str, Any]]:
        return await self.client.tables() if self.client else self.local.tables()

    async def table(self, key: TableKey) -> dict[str, Any]:
        if self.client:
            return await self.client.table(key.zone, key.dataset)
        return self.local.table(key, "local")

    async def query(self, sql: str, limit: int) -> dict[str, Any]:
        if self.client:
            return await self.client.query(sql, limit)
        return self.local.query(sql, limit=limit)


def _fields(doc: dict[str, Any]) -> str:
    return ", ".join(f"{f['name']}:{f['type']}" for f in doc.get("schema", {}).get("fields", []))


@app.command("ls")
def ls(
    table: str | None = typer.Argument(None, help="ZONE/DATASET to list partitions of."),
    server: str | None = _SERVER,
    as_json: bool = _JSON,
) -> None:
    """Tables of the lake (rows, partitions, fields), or one table's partitions."""

    async def main() -> None:
        target = _Target(server)
        if table is None:
            found = await target.tables()
            if as_json:
                console.print_json(json.dumps(found))
                return
            view = Table("table", "names", "partitions", "rows", "latest", "fields")
            for t in found:
                view.add_row(
                    f"{t['zone']}/{t['dataset']}",
                    ", ".join(t["names"]),
                    str(t["num_partitions"]),
                    str(t["num_records"]),
                    str(t["date"]),
                    _fields(t),
                )
            console.print(view)
            return
        doc = await target.table(TableKey.parse(table))
        if as_json:
            console.print_json(json.dumps(doc))
            return
        view = Table("date", "rows", "files", "bytes", "run", "job", "loaded")
        for p in doc["partitions"]:
            view.add_row(
                p["date"],
                str(p["num_records"]),
                str(len(p["files"])),
                str(p["artifact"]["size"]),
                p.get("run_id", ""),
                p.get("job_id", ""),
                p.get("loaded_at", ""),
            )
        console.print(f"{doc['zone']}/{doc['dataset']} ({', '.join(doc['names']) or 'unnamed'})")
        console.print(f"fields: {_fields(doc)}", highlight=False)
        console.print(view)

    run_async(main)


@app.command()
def query(
    sql: str = typer.Argument(..., help='One SELECT, e.g. "SELECT * FROM gold.scores".'),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="Most rows to show."),
    server: str | None = _SERVER,
    as_json: bool = _JSON,
) -> None:
    """Run a read-only SQL query (DuckDB) over the lake: tables are zone.dataset views."""

    async def main() -> None:
        result = await _Target(server).query(sql, limit)
        if as_json:
            console.print_json(json.dumps(result))
            return
        view = Table(*result["columns"])
        for row in result["rows"]:
            view.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(view)
        if result["truncated"]:
            err_console.print(f"(first {limit} rows; raise --limit for more)")

    run_async(main)


@app.command()
def load(
    table: str = typer.Argument(..., help="ZONE/DATASET to load into, e.g. gold/scores."),
    path: Path = typer.Argument(..., exists=True, help="A parquet file or directory of them."),
    date: str | None = typer.Option(None, "--date", help="Partition date (default: today UTC)."),
    name: str | None = typer.Option(None, "--table", help="Catalog name, e.g. prod.scores."),
    expected_rows: int | None = typer.Option(
        None, "--expected-rows", min=0, help="Refuse the load unless it holds this many rows."
    ),
    mode: str = typer.Option("overwrite", "--mode", help="overwrite or append."),
    server: str | None = _SERVER,
) -> None:
    """Load local parquet data as one day of a lake table, checking its row count."""

    async def main() -> None:
        target = _Target(server)
        key = PartitionKey(
            TableKey.parse(table), parse_date(date or dt.datetime.now(dt.UTC).date().isoformat())
        )
        files = dataset_files(path)
        expected = expected_rows if expected_rows is not None else count_rows(files)
        options: dict[str, Any] = {"expected_rows": expected, "mode": mode, "table": name}
        if target.client is not None:
            assert target.url is not None
            plane = DataPlane(
                store=staging_store(EngineSettings()), token=deployment_token(target.home)
            )
            ref = await plane.push(plane.publish(path), target.url, keep_local=False)
            result = await target.client.load(
                zone=key.table.zone,
                dataset=key.table.dataset,
                date=key.date,
                artifact=ref,
                job_id="cli",
                **options,
            )
        else:
            stored = target.local.store.put_dir(path) if path.is_dir() else None
            sha = stored.sha256 if stored else target.local.store.put_file(path).sha256
            result = target.local.load(
                key, sha256=sha, kind="dir" if stored else "file", job_id="cli", **options
            )
        console.print(
            f"loaded {result['added_records']} rows into {result['path']} "
            f"({result['num_records']} in the partition)",
            highlight=False,
        )

    run_async(main)
