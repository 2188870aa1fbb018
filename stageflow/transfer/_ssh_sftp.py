"""Copy one file over SFTP (asyncssh), resuming at the size already written.

The fallback for hosts without rsync. A resume trusts nothing: before appending, the bytes
already at the destination are hashed on both ends, and a prefix that no longer matches the
source is thrown away and the copy starts over. Without that check, a source replaced between two
attempts would be stitched into a file half old, half new; the final whole-file check would
still catch it, but only after every byte had moved, and as a non-retryable ``IntegrityError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import BinaryIO, cast

from stageflow.transfer._ssh_hash import file_sha256
from stageflow.transfer._ssh_remote import RemoteHost, map_errors, permanent
from stageflow.transfer._ssh_target import Progress

__all__ = ["sftp_download", "sftp_upload"]

log = logging.getLogger("stageflow.transfer.ssh")

_CHUNK = 4 << 20  # per await: asyncssh splits it into parallel SFTP requests
_MIN_PACED_CHUNK = 16 << 10


class _Pacer:
    """Keeps the average rate at or under ``rate`` bytes/s by sleeping when ahead of it."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.sent = 0
        self.start = time.monotonic()

    def chunk(self) -> int:
        """Chunk size: about a quarter second of data when limited, so the rate stays smooth."""
        if self.rate is None:
            return _CHUNK
        return max(_MIN_PACED_CHUNK, min(_CHUNK, self.rate // 4))

    async def account(self, n: int) -> None:
        if self.rate is None:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def sftp_download(
    remote: RemoteHost,
    path: str,
    partial: Path,
    size: int,
    *,
    rate: int | None,
    progress: Progress | None,
) -> None:
    """Make ``partial`` hold the remote ``path``'s ``size`` bytes, keeping a matching prefix."""
    offset = partial.stat().st_size if partial.exists() else 0
    if offset and (
        offset > size
        or await asyncio.to_thread(file_sha256, partial, offset)
        != await remote.sha256(path, offset)
    ):
        log.info("%s: the %d bytes already in %s are not the source's; starting over",
                 remote.url, offset, partial)  # fmt: skip
        offset = 0
    pacer = _Pacer(rate)
    with map_errors(remote.url), _open_local(partial, offset) as out:
        async with (
            remote.conn.start_sftp_client() as sftp,
            sftp.open(path, "rb", encoding=None) as src,
        ):
            if progress is not None:
                progress(offset, size)
            while offset < size:
                # asyncssh types read() as AnyStr; with encoding=None it is bytes
                data = cast(bytes, await src.read(min(pacer.chunk(), size - offset), offset))
                if not data:
                    break  # the source shrank: the hash check after the copy says so
                await asyncio.to_thread(_write, out, data)
                offset += len(data)
                if progress is not None:
                    progress(offset, size)
                await pacer.account(len(data))


async def sftp_upload(
    remote: RemoteHost,
    src: Path,
    partial: str,
    *,
    rate: int | None,
    progress: Progress | None,
) -> None:
    """Make the remote ``partial`` hold ``src``'s bytes, keeping a matching prefix."""
    size = src.stat().st_size
    there = await remote.stat(partial)
    if there.kind not in ("file", "missing"):
        raise permanent(f"{remote.url.address}: {partial} exists and is not a regular file")
    offset = there.size
    if offset and (
        offset > size
        or await remote.sha256(partial) != await asyncio.to_thread(file_sha256, src, offset)
    ):
        log.info("%s: the %d bytes already in %s are not %s's; starting over",
                 remote.url, offset, partial, src)  # fmt: skip
        offset = 0
    pacer = _Pacer(rate)
    with map_errors(remote.url), src.open("rb") as source:
        async with (
            remote.conn.start_sftp_client() as sftp,
            sftp.open(partial, "r+b" if offset else "wb", encoding=None) as out,
        ):
            if progress is not None:
                progress(offset, size)
            while offset < size:
                data = await asyncio.to_thread(_read_at, source, offset, pacer.chunk())
                if not data:
                    break  # the source shrank: the hash check after the copy says so
                await out.write(data, offset)
                offset += len(data)
                if progress is not None:
                    progress(offset, size)
                await pacer.account(len(data))


def _open_local(partial: Path, offset: int) -> BinaryIO:
    """``partial`` opened for writing at ``offset``, everything after it dropped."""
    out = partial.open("r+b" if partial.exists() else "wb")
    out.truncate(offset)
    out.seek(offset)
    return out


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _write(f: BinaryIO, data: bytes) -> None:
    f.write(data)
