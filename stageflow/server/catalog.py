"""The artifact catalog: which run and stage made each artifact, and where copies are.

Fed from the refs found in stage outputs (when a run's stages are read) and in worker events;
one row per (sha256, run, stage), whose locations grow as new ones are seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from stageflow.server.models import Artifact, utcnow
from stageflow.transfer.artifacts import find_refs

__all__ = ["ArtifactRef", "catalog_refs", "refs_in"]


class ArtifactRef(BaseModel):
    """An artifact ref as stages return it (docs/data-plane.md)."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    name: str = ""
    kind: Literal["file", "dir"]
    locations: list[str]


def refs_in(value: Any) -> list[ArtifactRef]:
    """The well-formed artifact refs anywhere inside ``value`` (others are skipped)."""
    found = []
    for raw in find_refs(value):
        try:
            found.append(ArtifactRef.model_validate(raw))
        except ValidationError:
            continue
    return found


def catalog_refs(
    session: Session, refs: Iterable[ArtifactRef], *, run_id: str | None, stage: str | None
) -> int:
    """Record ``refs`` as made by ``run_id``/``stage``; returns how many rows were new."""
    new = 0
    for ref in refs:
        row = session.scalar(
            select(Artifact).where(
                Artifact.sha256 == ref.sha256, Artifact.run_id == run_id, Artifact.stage == stage
            )
        )
        if row is None:
            session.add(
                Artifact(
                    sha256=ref.sha256,
                    name=ref.name[:1000],
                    kind=ref.kind,
                    size=ref.size,
                    run_id=run_id,
                    stage=stage,
                    locations=list(dict.fromkeys(ref.locations)),
                    created_at=utcnow(),
                )
            )
            session.flush()
            new += 1
        else:
            merged = list(dict.fromkeys([*row.locations, *ref.locations]))
            if merged != row.locations:
                row.locations = merged
    return new
