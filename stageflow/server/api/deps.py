"""What every API module shares: the control plane, token checks, and common response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from starlette.requests import HTTPConnection

from stageflow.server.control import ControlPlane
from stageflow.server.errors import ApiError, ErrorBody
from stageflow.server.tokens import Access

__all__ = [
    "ERRORS",
    "Control",
    "Responses",
    "UtcDatetime",
    "authorize",
    "bearer_token",
    "get_control",
    "websocket_access",
]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN_HINT = (
    "send `Authorization: Bearer <token>`: the admin token (STAGEFLOW_TOKEN or <home>/token) "
    "or, for reading only, the read-only token (STAGEFLOW_SERVER_READ_TOKEN or <home>/read-token)"
)

Responses = dict[int | str, dict[str, Any]]
"""The type of FastAPI's ``responses=`` (documented error bodies)."""

ERRORS: Responses = {
    401: {"model": ErrorBody, "description": "No bearer token."},
    403: {"model": ErrorBody, "description": "Wrong token, or a read-only token on a change."},
    422: {"model": ErrorBody, "description": "The request is malformed."},
}


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
"""A timestamp; one without a zone is taken as UTC."""


def get_control(connection: HTTPConnection) -> ControlPlane:
    control: ControlPlane | None = getattr(connection.app.state, "control", None)
    if control is None:
        raise ApiError(503, "the control plane is starting or stopping; try again shortly")
    return control


Control = Annotated[ControlPlane, Depends(get_control)]


def bearer_token(header_value: str | None) -> str | None:
    if not header_value:
        return None
    scheme, _, given = header_value.strip().partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


_bearer = HTTPBearer(auto_error=False, description="The admin or the read-only token.")


def authorize(
    request: Request,
    control: Control,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Access:
    """Admin may do everything; the read-only token may only read."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise ApiError(
            401, f"missing bearer token: {_TOKEN_HINT}", headers={"WWW-Authenticate": "Bearer"}
        )
    access = control.tokens.access(token)
    if access is None:
        raise ApiError(403, f"wrong token: {_TOKEN_HINT}")
    if access is Access.READ and request.method not in _SAFE_METHODS:
        raise ApiError(
            403,
            f"the read-only token cannot {request.method} {request.url.path}: use the admin "
            "token (STAGEFLOW_TOKEN or <home>/token)",
        )
    return access


def websocket_access(connection: HTTPConnection, control: ControlPlane) -> tuple[int, str] | None:
    """None when the WebSocket may read; else ``(401|403, what to do)``.

    Browsers cannot set headers on a WebSocket, so ``?token=`` is accepted too.
    """
    token = bearer_token(connection.headers.get("authorization")) or connection.query_params.get(
        "token"
    )
    if not token:
        return 401, f"missing token: {_TOKEN_HINT}, or pass ?token=<token>"
    if control.tokens.access(token) is None:
        return 403, f"wrong token: {_TOKEN_HINT}"
    return None
