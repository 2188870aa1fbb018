"""The worker's HTTP client for the control plane (``stageflow server``, routes under ``/api/v1``).

Why its own module: the log shipper and the registry share one connection pool, one token and
one rule about failures. A failure is a ``ControlPlaneError`` carrying the HTTP status (None when
the server could not be reached at all); the caller decides what to do, and the worker never
stops because the control plane is away: Temporal, not the control plane, runs the stages.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from stageflow.errors import StageflowError

__all__ = ["ControlClient", "ControlPlaneError"]

REQUEST_TIMEOUT_S = 10.0


class ControlPlaneError(StageflowError):
    """The control plane could not be reached (``status`` None) or answered with an error."""

    def __init__(self, message: str, *, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def rejected(self) -> bool:
        """The server read the request and refused its content: sending it again cannot help."""
        return self.status in (400, 413, 422)


class ControlClient:
    """``POST``s JSON to the control plane with the deployment's bearer token."""

    def __init__(self, base_url: str, *, token: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def post(self, path: str, body: Any) -> Any:
        """POST ``body`` (a JSON value, or bytes already encoded) and return the decoded answer."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            response = await self._client.post(
                path, content=content, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise ControlPlaneError(
                f"cannot reach the control plane at {self.base_url}: {type(exc).__name__}: {exc}",
                status=None,
            ) from None
        if response.status_code >= 400:
            raise ControlPlaneError(
                f"{self.base_url}{path} answered {response.status_code}: {_error_text(response)}",
                status=response.status_code,
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_text(response: httpx.Response) -> str:
    """The ``{"error": ...}`` of the contract, or the start of whatever came back."""
    try:
        document = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(document, dict) and "error" in document:
        return str(document["error"])
    if isinstance(document, dict) and "detail" in document:
        return str(document["detail"])
    return response.text[:200]
