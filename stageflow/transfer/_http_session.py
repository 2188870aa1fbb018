"""The HTTP plumbing under the transfer client: one session, its retries, its error mapping.

Kept apart from the transfer logic (http_client.py) so that the rules about which failures
are worth retrying live in one place:

* refused or dropped connections, timeouts, 408, 429 and 5xx are transient: retried with
  jittered exponential backoff (0.1 s doubling to 5 s), then reported as ``Unreachable`` so the
  caller can move on to the next location;
* 401/403 are AuthError, 507 is DiskFullError, other 4xx are PeerRejectedError: none of these
  is retried, since asking again cannot change the answer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from stageflow.errors import AuthError, DiskFullError, TransferError
from stageflow.transfer.ratelimit import RateLimiter

__all__ = [
    "BadBody",
    "NotHere",
    "PeerRejectedError",
    "Progress",
    "Session",
    "StatusError",
    "Tally",
    "TransferStats",
    "Unreachable",
    "base_urls",
    "check_response",
    "run_all",
]

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` whenever a chunk lands."""

_T = TypeVar("_T")


class PeerRejectedError(TransferError):
    """The peer refused the request itself (too large, malformed, not supported): not retried."""

    non_retryable = True


@dataclass
class TransferStats:
    """Counters of one or more transfers; pass the same instance to add them up."""

    bytes_received: int = 0
    """Body bytes read from the network (compressed size with zstd), discarded ones included."""
    bytes_sent: int = 0
    """Chunk body bytes written to the network (compressed size with zstd)."""
    chunks_transferred: int = 0
    chunks_reused: int = 0
    """Chunks found intact in a partial file (download) or already on the peer (upload)."""
    chunks_refetched: int = 0
    """Chunks moved again because their hash did not match."""
    requests_retried: int = 0
    """Requests repeated after a transient network error."""
    copies_quarantined: int = 0
    """Locations that, asked to verify a copy that served a wrong chunk, found it corrupt."""


class NotHere(Exception):
    """404: this location does not have the object (or the upload)."""


class Transient(Exception):
    """A failure that may pass: 408, 429 or 5xx."""


_RETRYABLE = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, Transient)


class Unreachable(Exception):
    """A location kept failing transiently after every retry."""


class BadBody(Exception):
    """The bytes that arrived cannot be the chunk asked for."""


class StatusError(Exception):
    """A 409 or 422 answer, which the caller interprets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])
    except ValueError:
        pass
    return response.text[:300] or response.reason_phrase


async def check_response(response: httpx.Response, what: str) -> None:
    """Map a non-2xx answer to the error that says what to do about it."""
    status = response.status_code
    if status < 300:
        return
    await response.aread()
    message = _message(response)
    where = f"{response.request.url.scheme}://{response.request.url.netloc.decode()}"
    if status in (401, 403):
        raise AuthError(
            f"{what}: {where} refused our token ({status}: {message}); every process of a "
            "deployment must share STAGEFLOW_TOKEN (or the same token file)"
        )
    if status == 404:
        raise NotHere(message)
    if status == 507:
        raise DiskFullError(f"{what}: {where} has no room ({message})")
    if status in (408, 429) or status >= 500:
        raise Transient(f"{status} {message}")
    if status in (409, 422):
        raise StatusError(status, message)
    raise PeerRejectedError(f"{what}: {where} answered {status}: {message}")


def base_urls(locations: Iterable[str]) -> list[str]:
    bases = []
    for location in locations:
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"location {location!r} is not an http(s) base URL")
        bases.append(location.rstrip("/"))
    if not bases:
        raise ValueError("no locations given")
    return bases


async def run_all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines together; the first failure cancels the rest and is raised as is."""
    tasks = [asyncio.create_task(coro) for coro in coros]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Tally:
    """Bytes done of a total, reported through the caller's progress callback."""

    def __init__(self, total: int, done: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, done, progress
        self.report()

    def add(self, n: int) -> None:
        self.done += n
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)


class Session:
    """One HTTP client, rate limiter and retry policy shared by a transfer's streams."""

    def __init__(
        self,
        *,
        token: str,
        streams: int,
        bandwidth: float | None,
        stats: TransferStats | None,
        retries: int,
        timeout: float,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        if retries < 1:
            raise ValueError(f"retries must be at least 1, got {retries}")
        self.streams = streams
        self.limiter = RateLimiter(bandwidth) if bandwidth is not None else None
        self.stats = stats if stats is not None else TransferStats()
        self.retries = retries
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(timeout, pool=None),
            limits=httpx.Limits(max_connections=streams, max_keepalive_connections=streams),
            trust_env=False,
        )
        from stageflow.transfer._fast_range import FastRanges

        self.fast = FastRanges(token, timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.fast.close()
        await self.client.aclose()

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``attempt``, retrying transient failures with jittered exponential backoff."""
        delay = 0.1
        for n in range(1, self.retries + 1):
            try:
                return await attempt()
            except _RETRYABLE as exc:
                if n == self.retries:
                    reason = str(exc) or type(exc).__name__
                    raise Unreachable(f"{what}: {reason} ({n} tries)") from exc
            self.stats.requests_retried += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def throttle(self, n: int) -> None:
        """Wait for the bandwidth cap (if any) to let ``n`` more bytes through."""
        if self.limiter is not None:
            await self.limiter.acquire(n)
