"""Settings of `stageflow server` (``STAGEFLOW_SERVER_*``)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from stageflow.errors import ConfigError

__all__ = ["CONFIG_ENV", "ServerSettings", "load_server_settings"]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_SERVER_", extra="ignore")

    bind: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(8700, ge=0, description="Port to listen on.")
    data_dir: Path | None = Field(
        None, description="Where persisted artifacts are kept (default: <home>/server)."
    )
    lake_dir: Path | None = Field(
        None,
        description="Where the lake lives (default: lake/ beside the data dir, so <home>/lake; "
        "keep it on the data dir's filesystem, lake files are hard links of stored objects).",
    )
    max_upload_bytes: int = Field(
        1 << 40, ge=1, description="Largest artifact a worker may upload (bytes)."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the control DB (default: sqlite:///<data dir>/control.db; "
        "postgresql://user:pass@host/db in production).",
    )
    read_token: SecretStr | None = Field(
        None,
        description="The read-only API token (GET only); default: <home>/read-token, generated.",
    )
    heartbeat_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between worker heartbeats (the workers' own interval, 5 by default); "
        "a worker silent for 3 intervals is shown as lost.",
    )
    log_poll_interval: float = Field(
        0.5,
        gt=0,
        description="How often log followers look for new lines in the DB (lines posted to "
        "this process wake them at once; the poll catches lines other processes stored).",
    )
    follow_grace: float = Field(
        5.0,
        ge=0,
        description="Seconds a log follower keeps tailing after its run ended, for late lines.",
    )
    index_sync_interval: float = Field(
        2.0,
        ge=0,
        description="Least seconds between two refreshes of the run index from Temporal.",
    )


CONFIG_ENV = "STAGEFLOW_SERVER_CONFIG"


def load_server_settings(config: Path | None = None) -> ServerSettings:
    """Settings from the optional YAML file (``--config`` or ``STAGEFLOW_SERVER_CONFIG``), with
    ``STAGEFLOW_SERVER_*`` variables taking precedence over it, and defaults for the rest."""
    path = config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None:
        return ServerSettings()
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the server settings: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, e.g. `port: 8700`")
    unknown = sorted(set(values) - set(ServerSettings.model_fields))
    if unknown:
        known = ", ".join(sorted(ServerSettings.model_fields))
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {known})")
    from_env = {
        name
        for name in ServerSettings.model_fields
        if f"STAGEFLOW_SERVER_{name.upper()}" in os.environ
    }
    try:
        return ServerSettings(**{k: v for k, v in values.items() if k not in from_env})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
