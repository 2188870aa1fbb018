"""The control DB's tables (docs/control-plane.md), as typed SQLAlchemy 2 models.

Temporal stays the source of truth for run state; these tables index runs and hold what
Temporal does not keep: pipelines, stage events, logs, workers and the artifact catalog.
The schema is created and changed only by the Alembic migrations beside this module; a test
checks that the two agree.

Times are stored as naive UTC (SQLite keeps no zone) and read back as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Artifact",
    "Base",
    "LogLine",
    "PipelineRecord",
    "RunRecord",
    "StageEvent",
    "WorkerRecord",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


JSONValue = JSON()
"""Plain JSON (``json`` on PostgreSQL, not ``jsonb``): specs keep their stage order."""
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONValue,
        list[Any]: JSONValue,
        Any: JSONValue,
    }


class PipelineRecord(Base):
    """A registered pipeline: its validated spec, as plain data."""

    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RunRecord(Base):
    """One run as last seen (Temporal's state wins whenever the server reads it)."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_started", "started_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255), unique=True)
    pipeline: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    params: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    state: Mapped[dict[str, Any] | None] = mapped_column(
        doc="The last full state read from Temporal (stages, outputs, errors): closed runs are "
        "shown from it without a workflow query, which would need a live worker."
    )


class StageEvent(Base):
    """What a worker reported about a stage attempt: started, succeeded, failed, progress."""

    __tablename__ = "stage_events"
    __table_args__ = (Index("ix_stage_events_run", "run_id", "stage", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255))
    stage: Mapped[str] = mapped_column(String(200))
    instance: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    worker: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any] | None]


class LogLine(Base):
    """One line a stage logged; ``id`` orders a run's lines and is the paging cursor."""

    __tablename__ = "log_lines"
    __table_args__ = (
        UniqueConstraint("worker", "stream_id", "seq", name="uq_log_lines_stream_seq"),
        Index("ix_log_lines_run", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255))
    stage: Mapped[str | None] = mapped_column(String(200))
    instance: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int | None] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(255))
    stream_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(16))
    stream: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class WorkerRecord(Base):
    """A worker's registration and its last heartbeat (``lost`` is derived, never stored)."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(255), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    queues: Mapped[list[Any]]
    tags: Mapped[list[Any]]
    cpus: Mapped[int | None] = mapped_column(Integer)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpus: Mapped[list[Any]]
    cost_per_hour: Mapped[float | None] = mapped_column(Float)
    data_url: Mapped[str | None] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16))
    load: Mapped[dict[str, Any] | None]
    registered_at: Mapped[datetime]
    last_heartbeat: Mapped[datetime]


class Artifact(Base):
    """An artifact a stage produced, and where copies of it are."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("sha256", "run_id", "stage", name="uq_artifacts_producer"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(1000))
    kind: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(255))
    stage: Mapped[str | None] = mapped_column(String(200))
    locations: Mapped[list[Any]]
    created_at: Mapped[datetime]
