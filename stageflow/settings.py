"""Typed settings, one class per subsystem, read from ``STAGEFLOW_*`` environment variables.

The Temporal connection itself is Temporal's own configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` or a ``temporal.toml`` profile),
read by ``temporalio.envconfig``; with no address set, stageflow runs an embedded dev server.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DataSettings", "EngineSettings", "TransferSettings", "WorkerSettings"]


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


class TransferSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_TRANSFER_", extra="ignore")

    streams: int = Field(4, ge=1, le=64, description="Parallel chunk streams per transfer.")
    chunk_size: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, description="Bytes per chunk (the unit of resume)."
    )
    bandwidth: int | None = Field(
        None, ge=1, description="Cap on bytes/s per transfer (all streams together)."
    )
    compress: bool = Field(False, description="zstd on the wire (for compressible data).")
    ssh_identity_file: Path | None = Field(
        None, description="Private key for ssh:// transfers (default: ssh's own)."
    )
    ssh_known_hosts: Path | None = Field(
        None, description="known_hosts for ssh:// transfers (default: ~/.ssh/known_hosts)."
    )


class DataSettings(BaseSettings):
    """Where this process keeps artifacts and how peers reach it."""

    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_DATA_", extra="ignore")

    staging_dir: Path | None = Field(
        None, description="Content-addressed staging dir (default: <home>/staging)."
    )
    port: int = Field(0, ge=0, description="Port serving this process's artifacts (0: any).")
    bind: str = Field("127.0.0.1", description="Address the artifact server listens on.")
    advertise: str | None = Field(
        None, description="Base URL peers use to reach us (default: http://<bind>:<port>)."
    )
    server_url: str | None = Field(
        None, description="The data server (`stageflow server`) that persisted artifacts go to."
    )
    gc_ttl: float = Field(
        7 * 86400,
        gt=0,
        description="`stageflow gc` removes unreferenced staging data older than this.",
    )
