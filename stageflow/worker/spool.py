"""The log shipper's on-disk spool: append-only JSONL segments, per process stream, one batch each.

Why segments of one batch: a segment is sent as one ``POST /api/v1/logs`` and deleted once the
server has accepted it, so there is no "how far did we get" state to keep on disk; a crash at
worst re-sends one segment, which the server's idempotency on (worker, stream_id, seq) absorbs.

Layout under the spool root (``<staging>/logspool``)::

    <stream_id>/lock                    flock'ed by the process that owns the stream while it lives
    <stream_id>/<first seq>.jsonl       {"worker", "stream_id"}, then one encoded line per line

A directory is created under a dot-name and renamed into place with its lock already held, so
a process that finds a directory whose lock it can take knows its owner has ended, and may send
its segments (``adopt_orphans``): that is how lines spooled by a killed worker are delivered by
the next start on the same worker home.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["Item", "OrphanStream", "Segment", "StreamSpool", "adopt_orphans", "read_segment"]

Item = tuple[int, bytes]
"""``(seq, encoded line)``: what the shipper queues, spools and sends."""

_SUFFIX = ".jsonl"


@dataclass
class Segment:
    """One spooled batch, read back."""

    path: Path
    worker: str
    stream_id: str
    items: list[Item]


def read_segment(path: Path) -> Segment | None:
    """The segment at ``path``; None when it has no readable header (an empty crash leftover).

    A line cut short by a crash (only ever the last one) is skipped.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    header_raw, _, body = raw.partition(b"\n")
    try:
        header = json.loads(header_raw)
        worker, stream_id = str(header["worker"]), str(header["stream_id"])
    except (ValueError, KeyError, TypeError):
        return None
    items: list[Item] = []
    for line in body.split(b"\n"):
        if not line:
            continue
        try:
            seq = int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
        items.append((seq, line))
    return Segment(path, worker, stream_id, items)


def _lock(path: Path, *, wait: bool) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if need be), or None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _segments_in(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(_SUFFIX))
    except FileNotFoundError:
        return []


def _header(worker: str, stream_id: str) -> bytes:
    return json.dumps({"worker": worker, "stream_id": stream_id}).encode() + b"\n"


class StreamSpool:
    """This process's spool directory. Not thread-safe: the shipper calls it under its lock."""

    def __init__(
        self, root: Path, *, worker: str, stream_id: str, max_lines: int, max_bytes: int
    ) -> None:
        self.root = Path(root)
        self.dir = self.root / stream_id
        self.worker = worker
        self.stream_id = stream_id
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lock_fd: int | None = None
        self._closed: list[tuple[int, Path]] = []
        self._file: IO[bytes] | None = None
        self._file_first = 0
        self._file_lines = 0
        self._file_bytes = 0
        self.lines = 0
        """Lines in the spool now (closed and open segments)."""
        self.bytes = 0
        """Their size on disk, about (headers aside)."""

    def open(self) -> None:
        """Create the directory with its lock held, so no other process adopts it."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{self.stream_id}.{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        self._lock_fd = _lock(staging / "lock", wait=True)
        staging.rename(self.dir)

    @property
    def empty(self) -> bool:
        return not self._closed and self._file is None

    def append(self, items: Iterable[Item]) -> None:
        """Add lines at the end (they are newer than everything spooled); on disk at return."""
        for seq, line in items:
            size = len(line) + 1
            if self._file is not None and (
                self._file_lines >= self.max_lines or self._file_bytes + size > self.max_bytes
            ):
                self._rotate()
            if self._file is None:
                self._file = open(self.dir / f"{seq:016d}{_SUFFIX}", "ab")  # noqa: SIM115
                self._file.write(_header(self.worker, self.stream_id))
                self._file_first, self._file_lines, self._file_bytes = seq, 0, 0
            self._file.write(line + b"\n")
            self._file_lines += 1
            self._file_bytes += size
            self.lines += 1
            self.bytes += size
        if self._file is not None:
            self._file.flush()  # in the OS's hands: a SIGKILL from here on loses nothing

    def put_back(self, items: list[Item]) -> None:
        """Spool a batch that failed to send; it is older than anything spooled meanwhile."""
        if not items:
            return
        path = self.dir / f"{items[0][0]:016d}{_SUFFIX}"
        with open(path, "wb") as f:
            f.write(_header(self.worker, self.stream_id))
            f.write(b"".join(line + b"\n" for _, line in items))
        bisect.insort(self._closed, (items[0][0], path))
        self.lines += len(items)
        self.bytes += sum(len(line) + 1 for _, line in items)

    def oldest(self) -> Path | None:
        """The segment to send next (the open one is closed first if it is all there is)."""
        if not self._closed and self._file is not None:
            self._rotate()
        return self._closed[0][1] if self._closed else None

    def remove(self, path: Path, items: list[Item]) -> None:
        """Forget a segment the server has accepted (``items``: what it held)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._closed = [(first, p) for first, p in self._closed if p != path]
        self.lines -= len(items)
        self.bytes -= sum(len(line) + 1 for _, line in items)

    def close(self) -> None:
        """Close the open segment and release the lock; an empty spool directory is removed."""
        if self._file is not None:
            self._rotate()
        if self.empty and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        bisect.insort(self._closed, (self._file_first, Path(self._file.name)))
        self._file = None


@dataclass
class OrphanStream:
    """The spool of a process that has ended, held (locked) by us while we send it."""

    dir: Path
    lock_fd: int
    segments: list[Path] = field(default_factory=list)

    def finish(self) -> None:
        """Every segment was delivered: remove the directory and let go of it."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def adopt_orphans(root: Path, *, own_stream_id: str) -> list[OrphanStream]:
    """The spool directories under ``root`` whose owners have ended, locked for us."""
    found: list[OrphanStream] = []
    if not root.is_dir():
        return found
    for directory in sorted(root.iterdir()):
        if directory.name.startswith(".") or directory.name == own_stream_id:
            continue
        if not directory.is_dir():
            continue
        try:
            fd = _lock(directory / "lock", wait=False)
        except FileNotFoundError:
            continue  # removed by whoever adopted it just now
        if fd is None:
            continue  # its process is alive
        found.append(OrphanStream(directory, fd, _segments_in(directory)))
    return found
