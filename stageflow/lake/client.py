"""Talking to the lake of a data server over HTTP, for workers and the CLI.

Workers never see the lake directory: a ``load`` sends the artifact to the server's store and
asks the server to install it; a stage that reads the lake (``lake://zone/dataset[/date]``)
fetches the partitions as ordinary ``kind: dir`` artifacts, verified chunk by chunk like any
other input.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from stageflow.errors import AuthError, ConfigError, LakeError, TransferError
from stageflow.lake.layout import TableKey, parse_lake_url

if TYPE_CHECKING:
    from stageflow.worker.context import StageContext

__all__ = ["LakeClient", "fetch_lake_source"]

_TIMEOUT = httpx.Timeout(30.0, read=300.0)


class LakeClient:
    """The ``/v1/lake`` routes of the data server at ``server_url``.

    401/403 raise ``AuthError``; a request the lake refuses raises ``LakeError`` (with the
    server's message and status); network trouble and 5xx raise ``TransferError`` (retryable).
    """

    def __init__(self, server_url: str, token: str, *, timeout: httpx.Timeout = _TIMEOUT) -> None:
        self.server_url = server_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.server_url}/v1/lake{path}"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as http:
                response = await http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise TransferError(f"the lake at {self.server_url} is unreachable: {exc!r}") from exc
        if response.status_code < 300:
            return response.json()
        message = _error_message(response)
        if response.status_code in (401, 403):
            raise AuthError(f"{self.server_url} refused the token: {message}")
        if response.status_code == 404 and not message:
            raise ConfigError(
                f"{self.server_url} serves no lake: point STAGEFLOW_SERVER_URL / "
                "STAGEFLOW_DATA_SERVER_URL at a data server (stageflow server, stageflow up)"
            )
        if 400 <= response.status_code < 500:
            raise LakeError(message, status=response.status_code)
        raise TransferError(f"the lake at {self.server_url} failed: {message}")

    async def load(
        self,
        *,
        zone: str,
        dataset: str,
        date: str | dt.date,
        artifact: dict[str, Any],
        run_id: str = "",
        job_id: str = "",
        table: str | None = None,
        expected_rows: int | None = None,
        mode: str = "overwrite",
    ) -> dict[str, Any]:
        """Install ``artifact`` (already in the server's store) as one day of a table."""
        body = {
            "zone": zone,
            "dataset": dataset,
            "date": str(date),
            "artifact": {k: artifact[k] for k in ("sha256", "kind", "name") if k in artifact},
            "run_id": run_id,
            "job_id": job_id,
            "table": table,
            "expected_rows": expected_rows,
            "mode": mode,
        }
        result: dict[str, Any] = await self._call("POST", "/load", body)
        return result

    async def tables(self) -> list[dict[str, Any]]:
        """Every table's summary (its table-level ``_schema.json`` plus catalog names)."""
        result: dict[str, Any] = await self._call("GET", "/tables")
        return list(result["tables"])

    async def table(self, zone: str, dataset: str) -> dict[str, Any]:
        """One table with its partitions, each carrying an artifact ref to fetch it by."""
        key = TableKey(zone, dataset)
        result: dict[str, Any] = await self._call("GET", f"/tables/{key.zone}/{key.dataset}")
        return result

    async def query(self, sql: str, limit: int = 1000) -> dict[str, Any]:
        """Run one read-only SELECT; ``{"columns", "rows", "truncated"}``."""
        result: dict[str, Any] = await self._call("POST", "/query", {"sql": sql, "limit": limit})
        return result


def _error_message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return "" if response.status_code == 404 else str(doc)[:300]


async def fetch_lake_source(ctx: StageContext, url: str) -> Path:
    """A local directory of verified parquet files holding ``lake://zone/dataset[/date]``.

    Without a date, every partition is fetched (the directory then holds ``yyyy/mm/dd/part_N
    .parquet``; read it recursively, e.g. ``stageflow.executors.parquet_io.dataset_files``).
    The data travels as a ``kind: dir`` artifact from the data server's store, so it is
    hash-checked and resumable like any other input, and lands under this stage's inputs.
    """
    if not ctx.server_url:
        raise ConfigError(f"reading {url} needs a data server: set STAGEFLOW_DATA_SERVER_URL")
    key, date = parse_lake_url(url)
    client = LakeClient(ctx.server_url, ctx.data_plane.token)
    info = await client.table(key.zone, key.dataset)
    if date is None:
        ref = info["artifact"]
    else:
        wanted = date.isoformat()
        found = [p for p in info["partitions"] if p["date"] == wanted]
        if not found:
            have = ", ".join(p["date"] for p in info["partitions"][-5:]) or "none"
            raise LakeError(f"{url}: no partition for {wanted} (latest: {have})", status=404)
        ref = found[0]["artifact"]
    ref = {**ref, "locations": [ctx.server_url]}
    placed = await ctx.data_plane.materialize({"lake": ref}, ctx.run_id, ctx.name, as_path=True)
    path: Path = placed["lake"]
    return path
