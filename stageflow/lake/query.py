"""Read-only SQL over the lake with DuckDB: one view per table, nothing else reachable.

Each query gets a fresh in-memory DuckDB with a view per lake table, named ``<zone>.<dataset>``
(``gold.campaign_scores``), plus one per catalog name (``prod.campaign_scores``). A view lists
the installed partitions' files, so a write in progress is never half visible. Then:

* ``allowed_directories`` is the lake and ``enable_external_access`` is off, so no file outside
  the lake can be read or written (``read_csv('/etc/passwd')``, ``COPY … TO '/tmp/x'``);
* ``lock_configuration`` is on, so a query cannot turn those back;
* only one ``SELECT`` statement is accepted (no ``COPY``, ``ATTACH``, ``CREATE``…), so nothing
  can be written inside the lake either;
* results are capped at ``limit`` rows, and a query running past ``timeout`` is interrupted.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import threading
import uuid
from pathlib import Path
from typing import Any

import duckdb

from stageflow.errors import LakeError
from stageflow.lake.catalog import read_catalog
from stageflow.lake.layout import ZONES, TableKey, validate_dataset
from stageflow.lake.writer import list_partitions

__all__ = ["MAX_ROWS", "list_tables", "run_query"]

MAX_ROWS = 10_000
_ALLOWED = {duckdb.StatementType.SELECT}


def list_tables(lake: Path) -> list[TableKey]:
    """Every ``zone/dataset`` directory of the lake (with or without partitions yet)."""
    found = []
    for zone in ZONES:
        zone_dir = Path(lake) / zone
        if not zone_dir.is_dir():
            continue
        for entry in sorted(zone_dir.iterdir()):
            try:
                validate_dataset(entry.name)
            except LakeError:
                continue
            if entry.is_dir():
                found.append(TableKey(zone, entry.name))
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _connect(lake: Path) -> duckdb.DuckDBPyConnection:
    lake = Path(lake).resolve()
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    views: dict[TableKey, bool] = {}
    for table in list_tables(lake):
        files = [
            str(part / item["name"])
            for part, doc in list_partitions(lake, table)
            for item in doc.get("files", [])
        ]
        if not files:
            continue
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{table.zone}"')
        listed = ", ".join(_literal(f) for f in files)
        con.execute(
            f'CREATE VIEW "{table.zone}"."{table.dataset}" AS '
            f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"
        )
        views[table] = True
    for name, table in read_catalog(lake).items():
        if table not in views:
            continue
        schema, view = name.split(".")
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        con.execute(
            f'CREATE VIEW "{schema}"."{view}" AS SELECT * FROM "{table.zone}"."{table.dataset}"'
        )
    con.execute(f"SET allowed_directories = [{_literal(str(lake) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(lake: Path, sql: str, *, limit: int = 1000, timeout: float = 60.0) -> dict[str, Any]:
    """``{"columns", "types", "rows", "truncated"}`` of one read-only SELECT over the lake.

    Blocking: call it in a thread. LakeError (400) for anything but one SELECT, for SQL errors
    and for a query that runs past ``timeout`` seconds.
    """
    limit = max(1, min(int(limit), MAX_ROWS))
    con = _connect(lake)
    timer = threading.Timer(timeout, con.interrupt)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise LakeError(f"the query does not parse: {exc}", status=400) from None
        if len(statements) != 1 or statements[0].type not in _ALLOWED:
            kinds = ", ".join(s.type.name for s in statements) or "nothing"
            raise LakeError(
                f"the lake answers one read-only SELECT per query, not {kinds}", status=400
            )
        timer.start()
        try:
            cursor = con.execute(sql)
            rows = cursor.fetchmany(limit + 1)
        except duckdb.InterruptException:
            stopped = f"the query ran past {timeout:g} s and was stopped: narrow it"
            raise LakeError(stopped, status=400) from None
        except duckdb.Error as exc:
            raise LakeError(f"the query failed: {exc}", status=400) from None
        description = cursor.description or []
        return {
            "columns": [d[0] for d in description],
            "types": [str(d[1]) for d in description],
            "rows": [[_jsonable(v) for v in row] for row in rows[:limit]],
            "truncated": len(rows) > limit,
        }
    finally:
        timer.cancel()
        con.close()


def _jsonable(value: Any) -> Any:
    """A JSON-able form of a DuckDB value (dates as ISO text, decimals as numbers…)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
