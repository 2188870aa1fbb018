"""Every error the API returns is ``{"error": "<what to do>"}`` (plus details where useful).

``install_error_handlers`` maps our exceptions, FastAPI's validation errors, Starlette's 404/405
and Temporal's unreachable-server errors to that shape, and turns anything unexpected into a
500 that names the request instead of leaking a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from stageflow.errors import ConfigError, EngineError, RunNotFoundError, SpecError

__all__ = ["ApiError", "ErrorBody", "SpecIssueOut", "error_response", "install_error_handlers"]

log = logging.getLogger("stageflow.server")


class ApiError(Exception):
    """Raise in a handler to answer ``status`` with ``{"error": message, **extra}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.extra = extra


class SpecIssueOut(BaseModel):
    file: str
    line: int | None
    column: int | None
    field: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="What went wrong and what to do about it.")
    issues: list[SpecIssueOut] | None = Field(
        None, description="Every problem found (invalid specs and request fields)."
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _validation_issues(exc: RequestValidationError) -> list[dict[str, Any]]:
    issues = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc else "request"
        issues.append(
            {
                "file": where,
                "line": None,
                "column": None,
                "field": ".".join(loc[1:]),
                "message": str(error.get("msg", "invalid")),
            }
        )
    return issues


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, str(exc), exc.headers, **exc.extra)

    @app.exception_handler(SpecError)
    async def spec_error(_: Request, exc: SpecError) -> JSONResponse:
        issues = [issue.__dict__ for issue in exc.issues]
        return error_response(422, f"{exc} (fix these and send the spec again)", issues=issues)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        issues = _validation_issues(exc)
        summary = "; ".join(
            f"{i['file']}{'.' + i['field'] if i['field'] else ''}: {i['message']}"
            for i in issues[:5]
        )
        return error_response(
            422, f"invalid request: {summary} (see /docs for the schema)", issues=issues
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint {request.url.path!r}: see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path!r}: see /docs"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(RunNotFoundError)
    async def run_not_found(_: Request, exc: RunNotFoundError) -> JSONResponse:
        return error_response(404, f"no run {exc.run_id!r}: list runs with GET /api/v1/runs")

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return error_response(409, str(exc))

    @app.exception_handler(ConfigError)
    async def config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return error_response(503, str(exc))

    @app.exception_handler(RPCError)
    async def temporal_error(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return error_response(404, f"not found in Temporal: {exc.message}")
        if exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION):
            return error_response(409, f"Temporal refused the request: {exc.message}")
        return error_response(
            503, f"Temporal is unavailable ({exc.message}); check /readyz and TEMPORAL_ADDRESS"
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            f"internal error on {request.method} {request.url.path} ({type(exc).__name__}); "
            "the server log has the details",
        )
