"""An object being received into a store: ``partial/<sha>``, written at chunk offsets.

Downloads write chunks from several streams (each in a worker thread) into one file at full
size; uploads on the serving side do the same from several requests. The file is locked
(``flock``) while open, so two transfers of one object into one store never interleave.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stageflow.transfer._fs import DISK_FULL

if TYPE_CHECKING:
    from stageflow.transfer.store import ContentStore

__all__ = ["Partial", "PartialBusyError"]


class PartialBusyError(BlockingIOError):
    """Another transfer holds the lock on this partial file; wait and try again."""


class Partial:
    """An object being received: ``partial/<sha>``, full size, written at chunk offsets.

    Holds an exclusive ``flock`` for as long as it is open, so two transfers of the same object
    into one store (two processes, or two tasks of one) never interleave their writes.
    ``write_at`` and ``read_at`` run in worker threads; ``close`` waits for any still using the
    descriptor (a cancelled task's thread keeps running), so a write can never land in another
    file that reused the descriptor number.
    """

    def __init__(self, store: ContentStore, sha: str, size: int, fd: int, existed: bool) -> None:
        self.store = store
        self.sha256 = sha
        self.size = size
        self.path = store.partial_path(sha)
        self.existed = existed
        """True when bytes from an earlier attempt were kept (worth re-hashing to resume)."""
        self._fd = fd
        self._users = 0
        self._closing = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _descriptor(self) -> Iterator[int]:
        with self._lock:
            if self._closing:
                raise ValueError(f"the partial file of {self.sha256} is closed")
            self._users += 1
        try:
            yield self._fd
        finally:
            with self._lock:
                self._users -= 1
                if self._closing and self._users == 0:
                    self._really_close()

    def _really_close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if offset < 0 or offset + len(view) > self.size:
            raise ValueError(f"write of {len(view)} bytes at {offset} exceeds {self.size}")
        try:
            with self._descriptor() as fd:
                while view:
                    written = os.pwrite(fd, view, offset)
                    view = view[written:]
                    offset += written
        except OSError as exc:
            if exc.errno in DISK_FULL:
                self.close()
                self.store.discard_partial(self.sha256)
                raise self.store.disk_full(f"receiving object {self.sha256}", self.size) from exc
            raise

    def read_at(self, offset: int, length: int) -> bytes:
        parts = []
        with self._descriptor() as fd:
            while length > 0:
                block = os.pread(fd, length, offset)
                if not block:
                    break
                parts.append(block)
                offset += len(block)
                length -= len(block)
        return b"".join(parts)

    @property
    def closed(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close now, or as soon as the last thread still reading or writing is done."""
        with self._lock:
            self._closing = True
            if self._users == 0:
                self._really_close()

    def __enter__(self) -> Partial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
