"""Settings of `stageflow server` (``STAGEFLOW_SERVER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServerSettings"]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_SERVER_", extra="ignore")

    bind: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(8700, ge=0, description="Port to listen on.")
    data_dir: Path | None = Field(
        None, description="Where persisted artifacts are kept (default: <home>/server)."
    )
    max_upload_bytes: int = Field(
        1 << 40, ge=1, description="Largest artifact a worker may upload (bytes)."
    )
