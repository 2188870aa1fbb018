"""A loopback TCP proxy that counts the bytes it forwards and can cut connections mid-stream.

Put in front of a real server, it measures what a transfer really sent over the wire (an
independent count: the client under test is not asked), and ``cut_after`` injects a real
network failure: each connection is aborted (RST) once it has carried that many bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["TcpProxy"]


class TcpProxy:
    """``async with TcpProxy(target_port) as proxy:`` listens on ``proxy.port``."""

    def __init__(self, target_port: int, *, cut_after: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.bytes_forwarded = 0
        self.connections = 0
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        carried = [0]
        try:
            async with asyncio.TaskGroup() as group:  # one side failing cancels the other
                group.create_task(self._pump(client_r, server_w, carried))
                group.create_task(self._pump(server_r, client_w, carried))
        except* (ConnectionError, _Cut):
            for writer in (client_w, server_w):
                writer.transport.abort()
        finally:
            for writer in (client_w, server_w):
                writer.close()
            self._tasks.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        carried: list[int],
    ) -> None:
        while data := await reader.read(65536):
            if self.cut_after is not None and carried[0] + len(data) > self.cut_after:
                self.cuts += 1
                raise _Cut
            writer.write(data)
            await writer.drain()
            carried[0] += len(data)
            self.bytes_forwarded += len(data)
        with contextlib.suppress(OSError):
            writer.write_eof()


class _Cut(Exception):
    """Raised by a pump to abort its connection."""
