"""``uses: cleanup``: free this worker's staging once a run's data is safe elsewhere.

The last step of the user's daily workflow ("cleanup worker staging"): given the run's
artifacts, remove this worker's copies of those the data server holds (checked object by
object, so nothing that exists only here is lost), and the run's work and input directories
here. Refs are not fetched first (``fetch_inputs = False``): the point is to delete them. The
stage runs where the artifacts are (locality routing sends it to the worker holding them); data
on other workers goes with their ``stageflow gc``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import Field

from stageflow.errors import ConfigError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.transfer.artifacts import find_refs
from stageflow.transfer.store import ContentStore
from stageflow.worker.context import StageContext

__all__ = ["CleanupExecutor"]


class CleanupParams(ExecutorParams):
    artifacts: Any = Field(
        None,
        description="Artifacts to drop from staging where the data server holds them: a ref, "
        "a list of refs (e.g. a matrix stage's outputs), or any structure holding refs.",
    )
    scratch: Any = Field(
        None, description="Intermediate artifacts nobody needs again: dropped regardless."
    )


class CleanupExecutor(Executor):
    name = "cleanup"
    Params = CleanupParams
    fetch_inputs = False

    async def run(self, params: CleanupParams, ctx: StageContext) -> dict[str, Any]:
        plane = ctx.data_plane
        safe = _objects(params.artifacts, plane.store)
        kept: list[str] = []
        if safe:
            if not ctx.server_url:
                raise ConfigError(
                    "`artifacts` are dropped only where the data server holds them, and this "
                    "worker has none (STAGEFLOW_DATA_SERVER_URL); list them under `scratch` "
                    "to drop them regardless"
                )
            held = await _held_by(ctx.server_url, plane.token, safe)
            kept = [sha for sha in safe if sha not in held]
        removable = [sha for sha in safe if sha not in kept]
        removable += [sha for sha in _objects(params.scratch, plane.store) if sha not in safe]
        await asyncio.to_thread(plane.clean_run, ctx.run_id, keep_stage=ctx.name)
        store = plane.store
        freed = 0
        for sha in removable:
            if store.has(sha):
                freed += store.info(sha).size
                store.remove(sha)
        if kept:
            ctx.logger.warning(
                "kept %d object(s) the data server does not hold (persist them to free them)",
                len(kept),
            )
        return {"removed_objects": len(removable), "freed_bytes": freed, "kept_objects": len(kept)}


def _objects(value: Any, store: ContentStore) -> list[str]:
    """The stored objects of the refs in ``value``: each file, each dir's files and manifest."""
    objects: dict[str, None] = {}
    for ref in find_refs(value):
        if not store.has(ref["sha256"]):
            continue
        if ref["kind"] == "dir":
            for entry in store.dir_manifest(ref["sha256"]).entries:
                objects[entry.sha256] = None
        objects[ref["sha256"]] = None
    return list(objects)


async def _held_by(server_url: str, token: str, shas: list[str]) -> set[str]:
    """The objects among ``shas`` the data server holds (HEAD each: 200 or 404)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server_url, headers=headers, timeout=30) as client:

        async def check(sha: str) -> str | None:
            response = await client.head(f"/v1/objects/{sha}")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            return sha

        found = await asyncio.gather(*(check(sha) for sha in shas))
    return {sha for sha in found if sha is not None}
