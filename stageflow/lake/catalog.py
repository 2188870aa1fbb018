"""The lake catalog: named tables (``prod.campaign_scores``) and the lake table each names.

What the notes call a "Hive load" is a load into a named table: the data lands in a lake
table and the name is registered here, so ``stageflow lake query`` can say ``SELECT * FROM
prod.campaign_scores``. The catalog is one JSON file in the lake root, replaced atomically
under a lock, so a crash leaves the old catalog or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stageflow.errors import LakeError
from stageflow.lake.layout import ZONES, TableKey
from stageflow.lake.schema import write_json_atomic

__all__ = ["CATALOG_FILE", "check_name", "read_catalog", "register", "validate_table_name"]

CATALOG_FILE = "_catalog.json"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$")


def validate_table_name(name: object) -> str:
    """``schema.table`` in lowercase identifiers; the schema may not be a zone name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise LakeError(
            f"table {name!r:.80}: write it as schema.table in lowercase letters, digits and _ "
            "(e.g. prod.campaign_scores)",
            status=400,
        )
    if name.split(".")[0] in ZONES:
        raise LakeError(
            f"table {name!r}: {name.split('.')[0]}.* already names the lake's own tables; "
            "pick another schema, e.g. prod",
            status=400,
        )
    return name


@contextlib.contextmanager
def _locked(lake: Path) -> Iterator[None]:
    lake.mkdir(parents=True, exist_ok=True)
    fd = os.open(lake / ".catalog.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_catalog(lake: Path) -> dict[str, TableKey]:
    """Name -> lake table, for every registered name (empty when there is no catalog)."""
    path = Path(lake) / CATALOG_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise LakeError(f"{path} is damaged ({exc}): restore it or remove it", status=500) from None
    tables: dict[str, Any] = doc.get("tables", {}) if isinstance(doc, dict) else {}
    return {name: TableKey(t["zone"], t["dataset"]) for name, t in sorted(tables.items())}


def check_name(lake: Path, name: str, table: TableKey) -> None:
    """Refuse (before any data moves) a name that is malformed or names another table."""
    validate_table_name(name)
    current = read_catalog(lake).get(name)
    if current is not None and current != table:
        raise LakeError(
            f"table {name} already names {current}, not {table}: load into {current} "
            "or choose another name",
            status=409,
        )


def register(lake: Path, name: str, table: TableKey) -> None:
    """Point ``name`` at ``table``. A name already pointing elsewhere is refused (409)."""
    with _locked(Path(lake)):
        check_name(lake, name, table)
        current = read_catalog(lake)
        current[name] = table
        doc = {"tables": {n: {"zone": t.zone, "dataset": t.dataset} for n, t in current.items()}}
        write_json_atomic(Path(lake) / CATALOG_FILE, doc)
