"""Typed settings, one class per subsystem, read from ``STAGEFLOW_*`` environment variables.

The Temporal connection itself is Temporal's own configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` or a ``temporal.toml`` profile),
read by ``temporalio.envconfig``; with no address set, stageflow runs an embedded dev server.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["EngineSettings", "WorkerSettings"]


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_", extra="ignore")

    home: Path = Field(
        Path.home() / ".stageflow",
        description="Data dir: the embedded Temporal database, logs and staging live here.",
    )
    heartbeat_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds of silence after which a stage's worker is presumed lost and the "
        "stage is retried elsewhere (a stage's heartbeat_timeout overrides it).",
    )
    temporal_ui_port: int | None = Field(
        None, description="Serve the embedded Temporal UI on this port (`stageflow up`: 8233)."
    )


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_WORKER_", extra="ignore")

    concurrency: int = Field(
        50, ge=1, description="Stages one worker runs at once on each task queue it polls."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds a stopping worker lets running stages finish."
    )
