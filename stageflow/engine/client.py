"""Connecting to Temporal: a configured cluster, or the embedded dev server.

With ``TEMPORAL_ADDRESS`` (or a ``temporal.toml`` profile) set, stageflow connects there with
the namespace, TLS and API key Temporal's own environment configuration gives. Otherwise it
opens the data dir's embedded dev server (``devserver``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError

from stageflow.engine.devserver import EmbeddedServer, open_embedded_server
from stageflow.errors import EngineError
from stageflow.settings import EngineSettings

__all__ = ["EngineSession", "configured_address", "connect", "engine_session"]


def _profile() -> ClientConfigProfile:
    return ClientConfigProfile.load()


def configured_address() -> str | None:
    """The Temporal address from the environment or profile, or None for embedded mode."""
    return _profile().address


def metrics_runtime(port: int, host: str = "0.0.0.0") -> Runtime:
    """A Temporal runtime exporting the SDK's own metrics for Prometheus on ``host:port``."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}"))
    )


async def connect(
    address: str | None = None, *, attempts: int = 40, runtime: Runtime | None = None
) -> Client:
    """A client for ``address`` (or the configured cluster), retried while it starts up."""
    config: dict[str, Any] = dict(_profile().to_client_connect_config())
    if address is not None:
        config["target_host"] = address
    target = config.get("target_host", "localhost:7233")
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await Client.connect(**config, runtime=runtime)
        except (RPCError, RuntimeError) as exc:
            last = exc
            await asyncio.sleep(0.25)
    raise EngineError(
        f"cannot reach Temporal at {target}: {last}. Check TEMPORAL_ADDRESS (unset it to use the "
        "embedded server) and the TLS/API key settings"
    )


@dataclass
class EngineSession:
    client: Client
    embedded: EmbeddedServer | None

    @property
    def is_embedded(self) -> bool:
        return self.embedded is not None


@asynccontextmanager
async def engine_session(
    settings: EngineSettings | None = None, *, owner: str = "cli", runtime: Runtime | None = None
) -> AsyncIterator[EngineSession]:
    """A connected client; in embedded mode the dev server lives as long as the session."""
    settings = settings or EngineSettings()
    if configured_address():
        yield EngineSession(await connect(runtime=runtime), None)
        return
    server = open_embedded_server(settings.home, owner=owner, ui_port=settings.temporal_ui_port)
    try:
        yield EngineSession(await connect(server.address, runtime=runtime), server)
    finally:
        server.stop()
