"""Ships captured stage lines to the control plane: batched, in order, never blocking a stage.

Why this shape. A stage that prints must never wait on the network, a server outage must not
lose lines, and a line the server already has may come again (it is idempotent on
(worker, stream_id, seq)) but should not without reason. So lines only ever move one way,
memory → spool → server, and the oldest are always sent first:

* ``submit`` (any thread; a ``LogCapture`` sink) appends to a bounded in-memory queue. When the
  queue is full its lines move to the spool on disk, and newer lines queue behind them.
* One sender task takes a batch (≤ 1,000 lines / 1 MiB) from the oldest place: spooled segments
  of ended processes, then this process's spool, then memory (once a batch is full or ~0.5 s
  after the last send); posts it; on success forgets it.
* A failed post puts the batch, and everything queued behind it, into the spool; while the spool
  is not empty new lines go straight to it (each write reaches the OS at once, so a SIGKILL
  during an outage loses nothing); the sender retries with backoff (0.2 s doubling to 10 s).
  A batch the server rejects as malformed (400/413/422) is dropped and logged: sending it
  again could not succeed and would hold up everything behind it.
* ``close`` tries to deliver the rest within a timeout and leaves what it could not in the spool,
  which the next start on the same spool directory sends (``spool.adopt_orphans``).

When the server is up, lines wait in memory for at most one flush interval; those are what a
SIGKILL of the worker can lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stageflow.worker.control import ControlClient, ControlPlaneError
from stageflow.worker.logcapture import LogLine
from stageflow.worker.spool import Item, OrphanStream, StreamSpool, adopt_orphans, read_segment

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_LINES", "LogShipper", "ShipperStats"]

MAX_BATCH_LINES = 1000
MAX_BATCH_BYTES = (1 << 20) - 4096
"""The contract's 1 MiB per batch, less room for the envelope."""
LOGS_PATH = "/api/v1/logs"

log = logging.getLogger(__name__)


@dataclass
class ShipperStats:
    """What the shipper has done so far (for logs, tests and the worker's shutdown message)."""

    delivered: int = 0
    """Lines the server accepted (re-sends included)."""
    posts: int = 0
    failures: int = 0
    spooled: int = 0
    """Lines written to the spool."""
    dropped: int = 0
    """Lines given up on: rejected by the server, or neither queued nor spooled (the spool is
    at its size limit, or the disk is full)."""


@dataclass
class _Batch:
    worker: str
    stream_id: str
    items: list[Item]
    segment: Path | None = None
    """Where the batch is spooled; None when it came from memory."""
    orphan: OrphanStream | None = None


class LogShipper:
    """Batches captured lines to ``POST /api/v1/logs``, through outages, in ``seq`` order.

    ``client`` stays the caller's to close. ``stream_id`` must be new for every process (the
    capture's), since ``seq`` starts again with it.
    """

    def __init__(
        self,
        *,
        client: ControlClient,
        worker: str,
        stream_id: str,
        spool_dir: Path,
        flush_interval: float = 0.5,
        max_queue_lines: int = 10_000,
        max_batch_lines: int = MAX_BATCH_LINES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_spool_bytes: int = 1 << 30,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self.client = client
        self.worker = worker
        self.stream_id = stream_id
        self.spool_dir = Path(spool_dir)
        self.flush_interval = flush_interval
        self.max_queue_lines = max_queue_lines
        self.max_batch_lines = max_batch_lines
        self.max_batch_bytes = max_batch_bytes
        self.max_spool_bytes = max_spool_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = ShipperStats()
        self._spool = StreamSpool(
            self.spool_dir,
            worker=worker,
            stream_id=stream_id,
            max_lines=max_batch_lines,
            max_bytes=max_batch_bytes,
        )
        self._lock = threading.Lock()
        self._memory: deque[Item] = deque()
        self._memory_bytes = 0
        self._offline = False
        self._closed = False
        self._inflight = 0
        self._orphans: deque[OrphanStream] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._wake_requested = False
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open this process's spool, pick up the spools of ended processes, start sending."""
        self._loop = asyncio.get_running_loop()
        self._spool.open()
        self._orphans.extend(adopt_orphans(self.spool_dir, own_stream_id=self.stream_id))
        waiting = sum(len(o.segments) for o in self._orphans)
        if waiting:
            log.info("sending %d log segment(s) spooled by earlier runs of this worker", waiting)
        self._task = asyncio.create_task(self._run(), name="stageflow-log-shipper")

    async def close(self, timeout: float) -> bool:
        """Deliver what is left within ``timeout`` s; True if nothing had to stay in the spool."""
        self._closing.set()
        self._request_wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with self._lock:
            self._closed = True
            self._spill_memory()
            delivered_all = self._spool.empty and not self._orphans
            left = self._spool.lines
            self._spool.close()
        for orphan in self._orphans:
            orphan.release()
        self._orphans.clear()
        if not delivered_all:
            log.warning(
                "%d log line(s) could not be shipped yet; they stay in %s for the next start",
                left,
                self.spool_dir,
            )
        return delivered_all

    @property
    def pending(self) -> int:
        """Lines of this process not yet accepted by the server."""
        with self._lock:
            return len(self._memory) + self._spool.lines + self._inflight

    # ------------------------------------------------------------------ producers
    def submit(self, line: LogLine) -> None:
        """Queue ``line`` for shipping. Never waits on the network; safe from any thread."""
        item = (line.seq, line.encode())
        with self._lock:
            if self._closed:
                self.stats.dropped += 1
                return
            if self._offline:
                self._to_spool([item])
                return
            self._memory.append(item)
            self._memory_bytes += len(item[1]) + 1
            if len(self._memory) > self.max_queue_lines:
                self._spill_memory()
                return
            full = self._batch_full()
        if full:
            self._request_wake()

    def _batch_full(self) -> bool:
        return (
            len(self._memory) >= self.max_batch_lines or self._memory_bytes >= self.max_batch_bytes
        )

    def _request_wake(self) -> None:
        if self._wake_requested or self._loop is None:
            return
        self._wake_requested = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            self._loop.call_soon_threadsafe(self._wake.set)

    def _to_spool(self, items: list[Item]) -> None:
        """Append to the spool (lock held). Lines that would take it past ``max_spool_bytes``,
        or that the disk refuses, are counted as dropped: the staging disk is for artifacts."""
        room = self.max_spool_bytes - self._spool.bytes
        kept = []
        for item in items:
            room -= len(item[1]) + 1
            if room < 0:
                break
            kept.append(item)
        self.stats.dropped += len(items) - len(kept)
        try:
            self._spool.append(kept)
        except OSError:
            self.stats.dropped += len(kept)
            return
        self.stats.spooled += len(kept)

    def _spill_memory(self) -> None:
        if self._memory:
            self._to_spool(list(self._memory))
            self._memory.clear()
            self._memory_bytes = 0

    # ------------------------------------------------------------------ sender
    async def _run(self) -> None:
        delay = self.backoff_initial
        outage = False
        reported_drops = 0
        while True:
            if self.stats.dropped > reported_drops:  # counted by submit(), told from here
                log.warning(
                    "%d stage log line(s) dropped so far: the spool in %s is at its limit of "
                    "%d bytes (or the disk is full) while the control plane cannot be reached",
                    self.stats.dropped,
                    self.spool_dir,
                    self.max_spool_bytes,
                )
                reported_drops = self.stats.dropped
            batch = self._take(full_only=True)
            if batch is None:
                if not self._closing.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                    self._wake.clear()
                    self._wake_requested = False
                batch = self._take(full_only=False)
                if batch is None:
                    if self._closing.is_set():
                        return
                    continue
            try:
                await self._post(batch)
            except ControlPlaneError as exc:
                if exc.rejected:
                    log.error("the control plane refused %d log line(s): %s", len(batch.items), exc)
                    self.stats.dropped += len(batch.items)
                    reported_drops += len(batch.items)
                    self._done(batch)
                    continue
                self.stats.failures += 1
                self._failed(batch)
                if not outage:
                    log.warning("%s; spooling stage logs to %s and retrying", exc, self.spool_dir)
                    outage = True
                await self._pause(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            except BaseException:  # cancelled mid-post by close(): keep the batch
                self._failed(batch)
                raise
            if outage:
                log.warning("the control plane is reachable again; sending spooled stage logs")
                outage = False
            delay = self.backoff_initial
            self.stats.delivered += len(batch.items)
            self._done(batch)

    async def _pause(self, delay: float) -> None:
        delay *= random.uniform(0.8, 1.2)
        if self._closing.is_set():
            await asyncio.sleep(min(delay, 0.5))  # closing: keep trying until close gives up
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    def _take(self, *, full_only: bool) -> _Batch | None:
        """The next batch, oldest first; None when there is nothing (or not a full batch yet)."""
        while self._orphans:
            orphan = self._orphans[0]
            if not orphan.segments:
                orphan.finish()
                self._orphans.popleft()
                continue
            segment = read_segment(orphan.segments[0])
            if segment is None or not segment.items:
                with contextlib.suppress(FileNotFoundError):
                    orphan.segments[0].unlink()
                orphan.segments.pop(0)
                continue
            return _Batch(
                segment.worker, segment.stream_id, segment.items, segment.path, orphan=orphan
            )
        while True:
            with self._lock:
                path = self._spool.oldest()
                if path is None:
                    if not self._memory or (full_only and not self._batch_full()):
                        return None
                    items = self._pop_memory()
                    self._inflight = len(items)
                    return _Batch(self.worker, self.stream_id, items)
            segment = read_segment(path)  # closed segments never change: no lock needed
            if segment is not None and segment.items:
                return _Batch(segment.worker, segment.stream_id, segment.items, path)
            with self._lock:
                self._spool.remove(path, [])

    def _pop_memory(self) -> list[Item]:
        items: list[Item] = []
        size = 0
        while self._memory and len(items) < self.max_batch_lines:
            item = self._memory[0]
            if items and size + len(item[1]) + 1 > self.max_batch_bytes:
                break
            self._memory.popleft()
            items.append(item)
            size += len(item[1]) + 1
        self._memory_bytes -= size
        return items

    async def _post(self, batch: _Batch) -> None:
        for chunk in self._chunks(batch.items):
            body = b"".join(
                [
                    b'{"worker":',
                    json.dumps(batch.worker).encode(),
                    b',"stream_id":',
                    json.dumps(batch.stream_id).encode(),
                    b',"lines":[',
                    b",".join(line for _, line in chunk),
                    b"]}",
                ]
            )
            self.stats.posts += 1
            await self.client.post(LOGS_PATH, body)

    def _chunks(self, items: list[Item]) -> Iterator[list[Item]]:
        """``items`` in pieces within the batch limits (a spooled segment already is one)."""
        chunk: list[Item] = []
        size = 0
        for item in items:
            if chunk and (
                len(chunk) >= self.max_batch_lines or size + len(item[1]) + 1 > self.max_batch_bytes
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += len(item[1]) + 1
        if chunk:
            yield chunk

    def _failed(self, batch: _Batch) -> None:
        """The server did not take ``batch``: keep it, and what queued behind it, on disk."""
        if batch.orphan is not None:
            return  # still in its file; tried again after the backoff
        with self._lock:
            if batch.segment is None:
                self._inflight = 0
                try:
                    self._spool.put_back(batch.items)
                    self.stats.spooled += len(batch.items)
                except OSError:  # no room on disk: hold the lines in memory, in front
                    self._memory.extendleft(reversed(batch.items))
                    self._memory_bytes += sum(len(line) + 1 for _, line in batch.items)
                    return
            self._spill_memory()
            self._offline = True

    def _done(self, batch: _Batch) -> None:
        """The server has ``batch`` (or refused it for good): forget it."""
        if batch.orphan is not None:
            assert batch.segment is not None
            with contextlib.suppress(FileNotFoundError):
                batch.segment.unlink()
            if batch.orphan.segments and batch.orphan.segments[0] == batch.segment:
                batch.orphan.segments.pop(0)
            return
        with self._lock:
            if batch.segment is None:
                self._inflight = 0
            else:
                self._spool.remove(batch.segment, batch.items)
                if self._spool.empty:
                    self._offline = False
