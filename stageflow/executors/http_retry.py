"""Outgoing HTTP calls from executors (``llm``, ``notify``, ``external``): one retry policy.

What is worth retrying is decided here once: refused/dropped connections, timeouts, 408, 409,
429 and 5xx are transient; any other 4xx is the peer telling us the request is wrong, and asking
again cannot change that. Waits grow exponentially with full jitter (so many workers backing off
together do not come back in step), and a server's ``retry-after-ms`` / ``Retry-After`` wins
when it says how long to wait, because it knows its own rate window better than we do.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx

from stageflow.errors import ConfigError, StageError

__all__ = [
    "RETRYABLE_STATUS",
    "HttpCallError",
    "is_retryable_status",
    "json_bytes",
    "post_json",
    "read_secret",
    "retry_delay",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})
_MAX_SERVER_WAIT = 300.0
"""A ``Retry-After`` longer than this is capped: a stage should not sleep for hours silently."""


class HttpCallError(StageError):
    """An outgoing call failed; ``non_retryable`` when the peer rejected the request itself."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.non_retryable = not retryable


def is_retryable_status(status: int) -> bool:
    """True for the statuses a later identical request may get past (429, 5xx, ...)."""
    return status in RETRYABLE_STATUS or status >= 500


def retry_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    headers: Mapping[str, str] | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The server's ``retry-after-ms`` (OpenAI sends it) or ``Retry-After`` (seconds or an HTTP
    date) is honoured when present; otherwise full jitter over ``initial * 2**(attempt-1)``,
    capped at ``maximum``.
    """
    told = _server_delay(headers) if headers is not None else None
    if told is not None:
        return min(told, _MAX_SERVER_WAIT)
    ceiling = min(maximum, initial * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _server_delay(headers: Mapping[str, str]) -> float | None:
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def post_json(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    retries: int,
    initial: float = 1.0,
    maximum: float = 30.0,
    what: str = "request",
    secret_env: str | None = None,
) -> tuple[httpx.Response, int]:
    """POST ``body`` (JSON bytes) with the retry policy above; returns (response, attempts).

    A 2xx/3xx answer is returned; a non-retryable answer raises ``HttpCallError`` at once with
    the peer's message; transient failures are retried ``retries`` times and then raise a
    retryable ``HttpCallError`` (so the stage's own retry policy decides what happens next).
    """
    sent_headers = {"Content-Type": "application/json", **headers}
    if secret_env:  # signed once: every retry sends the same bytes and signature
        sent_headers[SIGNATURE_HEADER] = sign(read_secret(secret_env, what), body)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        for attempt in range(1, retries + 2):
            failure: str
            response_headers: Mapping[str, str] | None = None
            try:
                response = await client.post(url, content=body, headers=sent_headers)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 400:
                    return response, attempt
                failure = f"HTTP {response.status_code}: {_snippet(response)}"
                if not is_retryable_status(response.status_code):
                    raise HttpCallError(
                        f"{what} to {url} was rejected with {failure}; fix the request "
                        "(retrying cannot help)",
                        status=response.status_code,
                        retryable=False,
                    )
                response_headers = response.headers
            if attempt > retries:
                raise HttpCallError(
                    f"{what} to {url} failed after {attempt} tries: {failure}", retryable=True
                )
            await asyncio.sleep(
                retry_delay(attempt, initial=initial, maximum=maximum, headers=response_headers)
            )
    raise AssertionError("unreachable")


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip().replace("\n", " ")
    if not text:
        return "(empty body)"
    return text[:limit] + ("…" if len(text) > limit else "")


SIGNATURE_HEADER = "X-Stageflow-Signature"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Stageflow-Signature`` value for ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def json_bytes(value: Any) -> bytes:
    """Compact JSON: the bytes that are sent are the bytes that are signed."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def read_secret(env: str, what: str) -> str:
    """The value of the environment variable ``env``; ConfigError (naming it only) when unset."""
    value = os.environ.get(env, "")
    if not value:
        raise ConfigError(
            f"{what}: environment variable {env} is not set on this worker; set it where the "
            "worker runs (its value is never logged)"
        )
    return value
