"""The download fast path: Range GETs read straight into the caller's chunk buffer.

httpx hands a body over in ~64 KiB ``bytes`` pieces through h11, httpcore and anyio; at a GiB
per second that bookkeeping, not the network, is the client's main CPU cost. Here one
persistent HTTP/1.1 connection per stream uses asyncio.BufferedProtocol, so the kernel copies
the body directly into the stream's preallocated chunk buffer (``recv_into``, up to the whole
chunk per call). Anything unexpected (not a plain 206 with the exact Content-Range and
Content-Length) raises ``Fallback`` and the caller repeats the request with httpx, which maps
errors as usual.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

__all__ = ["Fallback", "FastRanges"]

_HEAD_MAX = 64 * 1024


class Fallback(Exception):
    """Not a plain 206 of the asked-for bytes: let httpx do this request."""


class _Conn(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = bytearray(_HEAD_MAX)
        self.head_n = 0
        self.body: memoryview | None = None
        self.filled = 0
        self.need = 0
        self.in_body = False
        self.done: asyncio.Future[None] | None = None
        self.expect: tuple[str, int] = ("", 0)
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(
                httpx.RemoteProtocolError(f"connection closed mid-body: {exc or 'EOF'}")
            )

    def eof_received(self) -> bool:
        return False

    def start(self, body: memoryview, content_range: str) -> asyncio.Future[None]:
        self.body, self.need, self.filled = body, len(body), 0
        self.in_body, self.head_n = False, 0
        self.expect = (content_range, len(body))
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.in_body:
            assert self.body is not None
            return self.body[self.filled :]
        if self.head_n >= _HEAD_MAX:
            return memoryview(bytearray(1))  # ends up failing below
        return memoryview(self.head)[self.head_n :]

    def buffer_updated(self, nbytes: int) -> None:
        done = self.done
        if done is None or done.done():
            return
        if self.in_body:
            self.filled += nbytes
        else:
            self.head_n += nbytes
            end = self.head.find(b"\r\n\r\n", 0, self.head_n)
            if end < 0:
                if self.head_n >= _HEAD_MAX:
                    done.set_exception(Fallback("response head too large"))
                return
            problem = self._check_head(bytes(self.head[:end]))
            if problem:
                done.set_exception(Fallback(problem))
                return
            rest = self.head[end + 4 : self.head_n]
            if len(rest) > self.need:
                done.set_exception(Fallback("more body than asked for"))
                return
            assert self.body is not None
            self.body[: len(rest)] = rest
            self.filled = len(rest)
            self.in_body = True
        if self.filled >= self.need:
            done.set_result(None)

    def _check_head(self, head: bytes) -> str | None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[0] != "HTTP/1.1" or parts[1] != "206":
            return f"status line {lines[0]!r}"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        content_range, length = self.expect
        if headers.get("content-range") != content_range:
            return "content-range differs"
        if headers.get("content-length") != str(length):
            return "content-length differs"
        if headers.get("content-encoding", "identity").lower() != "identity":
            return "encoded body"
        if "transfer-encoding" in headers:
            return "transfer-encoding"
        self.keep_alive = headers.get("connection", "").lower() != "close"
        return None


class FastRanges:
    """A small pool of idle connections per host; one request at a time on each."""

    def __init__(self, token: str, timeout: float) -> None:
        self.token = token
        self.timeout = timeout
        self.idle: dict[tuple[str, int], list[_Conn]] = {}

    async def get_into(
        self, base: str, sha: str, first: int, last: int, total: int, into: memoryview
    ) -> int:
        parts = urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None:
            raise Fallback("not plain http")
        key = (parts.hostname, parts.port or 80)
        conn = await self._checkout(key)
        path = (parts.path or "") + f"/v1/objects/{sha}"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept-Encoding: identity\r\n"
            f"Range: bytes={first}-{last}\r\n\r\n"
        ).encode("latin-1")
        done = conn.start(into, f"bytes {first}-{last}/{total}")
        ok = False
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            try:
                await asyncio.wait_for(done, self.timeout)
            except TimeoutError:
                raise httpx.ReadTimeout(f"no body from {base} in {self.timeout} s") from None
            ok = True
        finally:
            if ok and conn.keep_alive and not conn.closed:
                self.idle.setdefault(key, []).append(conn)
            elif conn.transport is not None:
                conn.transport.abort()
        return len(into)

    async def _checkout(self, key: tuple[str, int]) -> _Conn:
        pool = self.idle.get(key, [])
        while pool:
            conn = pool.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, key[0], key[1]), self.timeout
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]}") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return conn

    def close(self) -> None:
        for pool in self.idle.values():
            for conn in pool:
                if conn.transport is not None:
                    conn.transport.abort()
        self.idle.clear()
