"""What the commands that read the control plane share: where it is, the token, errors.

The control plane is ``stageflow server`` (``docs/control-plane.md``); its URL comes from
``--server`` or ``STAGEFLOW_SERVER_URL``, its token from ``STAGEFLOW_TOKEN`` or
``<home>/token``. Failures become ``ControlPlaneError`` with what to do about them, which
``run_async``-style handling turns into a red message and exit status 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import typer
from rich.markup import escape

from stageflow.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, err_console
from stageflow.cli.dataplane import deployment_token
from stageflow.errors import ConfigError, StageflowError
from stageflow.settings import EngineSettings, WorkerSettings
from stageflow.worker.control import ControlPlaneError

__all__ = ["ControlApi", "check", "cli_errors", "server_option"]


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """A stageflow error becomes a red message and exit status 1; Ctrl-C exits quietly."""
    try:
        yield
    except StageflowError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def server_option() -> Any:
    return typer.Option(None, "--server", help="Control plane URL (default: STAGEFLOW_SERVER_URL).")


class ControlApi:
    """A small synchronous client for the read side of ``/api/v1``."""

    def __init__(self, server: str | None) -> None:
        url = server or WorkerSettings().server_url
        if not url:
            raise ConfigError(
                "no control plane: pass --server URL or set STAGEFLOW_SERVER_URL to the address "
                "of `stageflow server`"
            )
        self.base_url = url.rstrip("/")
        token = deployment_token(EngineSettings().home)
        self._headers = {"Authorization": f"Bearer {token}"}

    def client(self, *, read_timeout: float | None = 30.0) -> httpx.Client:
        timeout = httpx.Timeout(30.0, read=read_timeout)
        return httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            try:
                response = client.get(path, params=_clean(params))
            except httpx.HTTPError as exc:
                raise self.unreachable(exc) from None
            check(response, self.base_url)
            return response.json()

    def unreachable(self, exc: Exception) -> ControlPlaneError:
        return ControlPlaneError(
            f"cannot reach the control plane at {self.base_url} ({type(exc).__name__}: {exc}); "
            "is `stageflow server` running there? (--server / STAGEFLOW_SERVER_URL)",
            status=None,
        )


def check(response: httpx.Response, base_url: str) -> None:
    """Raise ``ControlPlaneError`` with the server's own explanation for an error answer."""
    if response.status_code < 400:
        return
    response.read()  # a streamed answer (``--follow``) has not been read yet
    try:
        document = response.json()
        reason = document.get("error") or document.get("detail") or response.text
    except (ValueError, AttributeError):
        reason = response.text[:300]
    hint = ""
    if response.status_code in (401, 403):
        hint = " (set STAGEFLOW_TOKEN to the deployment's token, the one `stageflow server` uses)"
    raise ControlPlaneError(
        f"{base_url} answered {response.status_code}: {reason}{hint}", status=response.status_code
    )


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {key: value for key, value in params.items() if value is not None}
