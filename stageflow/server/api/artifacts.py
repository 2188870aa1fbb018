"""``/artifacts/{sha}``: what the catalog knows of an artifact, and its bytes when held here.

Content is served from this server's own store (what ``persist: true`` pushed here) with
``Range`` support; an artifact held only by workers is a 404 that lists where it is (fetch it
with ``stageflow transfer sha256:<hex> --from URL``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from stageflow.server.api.deps import ERRORS, Control, Responses
from stageflow.server.errors import ApiError, ErrorBody
from stageflow.server.models import Artifact
from stageflow.transfer.manifest import validate_sha

__all__ = ["router"]

router = APIRouter(tags=["artifacts"], responses=ERRORS)
_ERRORS: Responses = {
    400: {"model": ErrorBody, "description": "Not a sha256."},
    404: {"model": ErrorBody, "description": "Unknown here."},
}


class Producer(BaseModel):
    run_id: str | None
    stage: str | None
    created_at: datetime


class ArtifactOut(BaseModel):
    sha256: str
    name: str | None
    kind: Literal["file", "dir"] | None
    size: int
    locations: list[str]
    on_server: bool
    produced_by: list[Producer]


def _sha(value: str) -> str:
    try:
        return validate_sha(value)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@router.get("/artifacts/{sha}", response_model=ArtifactOut, responses=_ERRORS)
async def show_artifact(sha: str, control: Control) -> ArtifactOut:
    sha = _sha(sha)
    rows = await control.db.run(
        lambda s: list(
            s.scalars(select(Artifact).where(Artifact.sha256 == sha).order_by(Artifact.id))
        )
    )
    on_server = control.store.has(sha)
    if not rows and not on_server:
        raise ApiError(404, f"no artifact {sha} is known to this server")
    size = rows[0].size if rows else control.store.info(sha).size
    return ArtifactOut(
        sha256=sha,
        name=rows[0].name if rows else None,
        kind=rows[0].kind if rows else None,  # type: ignore[arg-type]
        size=size,
        locations=list(dict.fromkeys(loc for row in rows for loc in row.locations)),
        on_server=on_server,
        produced_by=[
            Producer(run_id=row.run_id, stage=row.stage, created_at=row.created_at) for row in rows
        ],
    )


def _locations(session: Session, sha: str) -> list[str]:
    rows = session.scalars(select(Artifact.locations).where(Artifact.sha256 == sha))
    return list(dict.fromkeys(loc for locations in rows for loc in locations))


@router.get(
    "/artifacts/{sha}/content",
    responses={
        **_ERRORS,
        200: {"content": {"application/octet-stream": {}}, "description": "The bytes."},
    },
    response_class=FileResponse,
)
async def artifact_content(sha: str, control: Control) -> FileResponse:
    """The bytes (for a dir artifact: its manifest); ``Range`` requests are honoured."""
    sha = _sha(sha)
    if not control.store.has(sha):
        where = await control.db.run(lambda s: _locations(s, sha))
        hint = (
            f"; it is held at {', '.join(where)}: `stageflow transfer sha256:{sha} --from URL`"
            if where
            else ""
        )
        raise ApiError(404, f"artifact {sha} is not stored on this server{hint}")
    return FileResponse(
        control.store.path(sha), media_type="application/octet-stream", filename=sha
    )
