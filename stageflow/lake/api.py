"""The lake's HTTP routes, mounted under the data plane's ``/v1`` (same bearer token).

| route | what |
|---|---|
| ``GET /v1/lake/tables`` | every table's summary (its table-level ``_schema.json``) and names |
| ``GET /v1/lake/tables/{zone}/{dataset}`` | one table, its partitions, an artifact ref each |
| ``POST /v1/lake/load`` | install an uploaded artifact as one day of a table |
| ``POST /v1/lake/query`` | ``{"sql", "limit"}`` -> ``{"columns", "types", "rows", "truncated"}`` |

The work is ``stageflow.lake.service.Lake``'s, run in threads. Bodies are read with the data
plane's size cap and errors are its JSON ``{"error": ...}``, so this module reuses its helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stageflow.errors import LakeError
from stageflow.lake.layout import PartitionKey, TableKey, parse_date
from stageflow.lake.query import MAX_ROWS
from stageflow.lake.service import Lake
from stageflow.lake.writer import Mode
from stageflow.transfer.http_app import ApiError, _DataRoute, _json_body, _read_body
from stageflow.transfer.store import ContentStore

__all__ = ["LoadRequest", "QueryRequest", "lake_router"]

_MAX_BODY = 256 * 1024
_M = TypeVar("_M", bound=BaseModel)


class _LakeRoute(_DataRoute):
    """The data plane's JSON errors, plus LakeError with its own status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LakeError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)

        return handle


class _ArtifactRef(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: Literal["file", "dir"] = "dir"
    name: str | None = Field(None, max_length=255)


class LoadRequest(BaseModel):
    """``POST /v1/lake/load``: which uploaded artifact becomes which day of which table."""

    model_config = ConfigDict(extra="forbid")

    zone: str = Field(max_length=16)
    dataset: str = Field(max_length=64)
    date: str = Field(max_length=10)
    artifact: _ArtifactRef
    run_id: str = Field("", max_length=200)
    job_id: str = Field("", max_length=200)
    table: str | None = Field(None, max_length=128)
    expected_rows: int | None = Field(None, ge=0)
    mode: Mode = "overwrite"


class QueryRequest(BaseModel):
    """``POST /v1/lake/query``: one SELECT, at most ``limit`` rows back."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=64 * 1024)
    limit: int = Field(1000, ge=1, le=MAX_ROWS)


def _parse(model: type[_M], raw: bytes) -> _M:
    try:
        return model.model_validate(_json_body(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(400, f"malformed request: {problems:.500}") from None


def lake_router(store: ContentStore, lake_dir: Path) -> APIRouter:
    """The ``/lake`` routes over the lake in ``lake_dir`` (files hard-linked from ``store``)."""
    lake = Lake(lake_dir, store)
    router = APIRouter(prefix="/lake", route_class=_LakeRoute)

    @router.get("/tables")
    async def get_tables() -> dict[str, Any]:
        return {"tables": await anyio.to_thread.run_sync(lake.tables)}

    @router.get("/tables/{zone}/{dataset}")
    async def get_table(zone: str, dataset: str, request: Request) -> dict[str, Any]:
        key = TableKey(zone, dataset)
        location = str(request.base_url).rstrip("/")
        return await anyio.to_thread.run_sync(lake.table, key, location)

    @router.post("/load")
    async def load(request: Request) -> dict[str, Any]:
        body = _parse(LoadRequest, await _read_body(request, _MAX_BODY))
        key = PartitionKey(TableKey(body.zone, body.dataset), parse_date(body.date))

        def install() -> dict[str, Any]:
            return lake.load(
                key,
                sha256=body.artifact.sha256,
                kind=body.artifact.kind,
                mode=body.mode,
                expected_rows=body.expected_rows,
                run_id=body.run_id,
                job_id=body.job_id,
                table=body.table,
            )

        return await anyio.to_thread.run_sync(install)

    @router.post("/query")
    async def query(request: Request) -> dict[str, Any]:
        body = _parse(QueryRequest, await _read_body(request, _MAX_BODY))
        return await anyio.to_thread.run_sync(lambda: lake.query(body.sql, limit=body.limit))

    return router
