"""Typed settings, one class per subsystem, read from ``STAGEFLOW_*`` environment variables.

The Temporal connection itself is Temporal's own configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` or a ``temporal.toml`` profile),
read by ``temporalio.envconfig``; with no address set, stageflow runs an embedded dev server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DataSettings", "EngineSettings", "LogSettings", "TransferSettings", "WorkerSettings"]


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
    model_config = SettingsConfigDict(
        env_prefix="STAGEFLOW_WORKER_", extra="ignore", populate_by_name=True
    )

    concurrency: int = Field(
        50, ge=1, description="Stages one worker runs at once on each task queue it polls."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port for the Temporal SDK's Prometheus metrics."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds a stopping worker lets running stages finish."
    )
    server_url: str | None = Field(
        None,
        validation_alias=AliasChoices("STAGEFLOW_SERVER_URL", "STAGEFLOW_WORKER_SERVER_URL"),
        description="The control plane (`stageflow server`) the worker registers with and ships "
        "stage logs to (`STAGEFLOW_SERVER_URL`); none: logs stay local, no registration.",
    )
    cost_per_hour: float | None = Field(
        None, ge=0, description="What this machine costs per hour, reported to the control plane."
    )
    heartbeat_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between the worker's heartbeats to the control plane (it is shown "
        "as lost after 3 missed ones).",
    )
    log_queue_lines: int = Field(
        10_000,
        ge=1,
        description="Captured log lines held in memory before they spill to the on-disk spool.",
    )
    log_spool_max_bytes: int = Field(
        1 << 30,
        ge=0,
        description="Most disk the log spool may take while the control plane is away; lines "
        "beyond it are dropped (and counted in the worker's log).",
    )
    log_flush_interval: float = Field(
        0.5, gt=0, description="Seconds a captured line waits at most before it is shipped."
    )
    log_flush_timeout: float = Field(
        10.0,
        ge=0,
        description="Seconds a stopping worker spends shipping its last lines; the rest stays in "
        "the spool for the next start.",
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

    model_config = SettingsConfigDict(
        env_prefix="STAGEFLOW_DATA_", extra="ignore", populate_by_name=True
    )

    staging_dir: Path | None = Field(
        None, description="Content-addressed staging dir (default: <home>/staging)."
    )
    port: int = Field(0, ge=0, description="Port serving this process's artifacts (0: any).")
    bind: str = Field("127.0.0.1", description="Address the artifact server listens on.")
    advertise: str | None = Field(
        None, description="Base URL peers use to reach us (default: http://<bind>:<port>)."
    )
    server_url: str | None = Field(
        None,
        description="The data server (`stageflow server`) that persisted artifacts go to; "
        "defaults to STAGEFLOW_SERVER_URL, the same process as the control plane.",
        validation_alias=AliasChoices("STAGEFLOW_DATA_SERVER_URL", "STAGEFLOW_SERVER_URL"),
    )
    gc_ttl: float = Field(
        7 * 86400,
        gt=0,
        description="`stageflow gc` removes unreferenced staging data older than this.",
    )


class LogSettings(BaseSettings):
    """How a stageflow process writes its own log (``STAGEFLOW_LOG_*``)."""

    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_LOG_", extra="ignore")

    format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object per line on stderr (with run_id, stage and attempt "
        "on what stages log and print), for log collectors; `text`: for people.",
    )
