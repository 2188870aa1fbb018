"""The control DB: pipelines, runs, stage events, log lines, workers, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON()  # json, not jsonb, on PostgreSQL: key order (stage order) is kept


def _id() -> sa.Column[int]:
    return sa.Column("id", _ID, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "pipelines",
        _id(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "runs",
        _id(),
        sa.Column("run_id", sa.String(255), nullable=False, unique=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("state", _JSON, nullable=True),
    )
    op.create_index("ix_runs_pipeline", "runs", ["pipeline"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_started", "runs", ["started_at", "id"])
    op.create_table(
        "stage_events",
        _id(),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("stage", sa.String(200), nullable=False),
        sa.Column("instance", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("detail", _JSON, nullable=True),
    )
    op.create_index("ix_stage_events_run", "stage_events", ["run_id", "stage", "id"])
    op.create_table(
        "log_lines",
        _id(),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("stage", sa.String(200), nullable=True),
        sa.Column("instance", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.UniqueConstraint("worker", "stream_id", "seq", name="uq_log_lines_stream_seq"),
    )
    op.create_index("ix_log_lines_run", "log_lines", ["run_id", "id"])
    op.create_table(
        "workers",
        _id(),
        sa.Column("worker_id", sa.String(255), nullable=False, unique=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("queues", _JSON, nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_bytes", sa.BigInteger(), nullable=True),
        sa.Column("gpus", _JSON, nullable=False),
        sa.Column("cost_per_hour", sa.Float(), nullable=True),
        sa.Column("data_url", sa.String(1000), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("load", _JSON, nullable=True),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "artifacts",
        _id(),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=True),
        sa.Column("stage", sa.String(200), nullable=True),
        sa.Column("locations", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("sha256", "run_id", "stage", name="uq_artifacts_producer"),
    )
    op.create_index("ix_artifacts_sha256", "artifacts", ["sha256"])


def downgrade() -> None:
    for table in ("artifacts", "workers", "log_lines", "stage_events", "runs", "pipelines"):
        op.drop_table(table)
