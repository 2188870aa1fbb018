"""Moving objects between stores over the data plane's HTTP protocol (docs/data-plane.md).

``download`` fetches an object's chunk manifest, then its chunks over parallel ``Range``
requests into ``partial/<sha>``; ``upload`` pushes a local object's chunks to a peer;
``fetch_dir`` moves a directory manifest and every object it names. Why it is shaped so:

* Each chunk is checked against its sha256 as it lands and fetched again when wrong; a chunk
  still wrong after 3 tries means the source is corrupt (non-retryable IntegrityError).
* At the first wrong chunk from a location, that location is asked (once per transfer) to
  verify its stored copy. One that finds it corrupt quarantines it and is dropped at once: the
  chunks already verified stay and the rest come from the other locations; with none left the
  object is "no longer served anywhere" (a retryable TransferError naming it, on which
  ``stageflow runs retry`` re-runs the stage that made it). An intact copy means the bytes
  went wrong on the wire: refetch, as above.
* A restarted transfer re-hashes what the partial file already holds and keeps every chunk
  that matches, so a killed transfer re-sends at most the chunks in flight, one per stream.
* The whole object is hashed again before the atomic rename into ``objects/``.
* Memory is one chunk buffer per stream, whatever the object's size.
* Network trouble (refused or dropped connections, timeouts, 408/429/5xx) is retried with
  exponential backoff, then the next location is tried; 401/403 raise AuthError at once,
  since no retry fixes a wrong token.
* ``TransferStats`` counts the bytes that really crossed the network, so a resume's savings
  (and a test's claims about them) can be checked.

Connections go straight to the peers: proxy variables from the environment are ignored.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections import Counter, deque
from pathlib import Path
from typing import Any

from stageflow.errors import DiskFullError, IntegrityError, TransferError
from stageflow.transfer._fast_range import Fallback
from stageflow.transfer._http_session import (
    BadBody,
    NotHere,
    PeerRejectedError,
    Progress,
    Session,
    StatusError,
    Tally,
    TransferStats,
    Unreachable,
    base_urls,
    check_response,
    run_all,
)
from stageflow.transfer.encoding import BoundedDecompressor, compress
from stageflow.transfer.manifest import ChunkManifest, DirManifest, validate_sha
from stageflow.transfer.store import ContentStore, Partial, PartialBusyError

__all__ = [
    "MAX_TRIES_PER_CHUNK",
    "PeerRejectedError",
    "Progress",
    "TransferStats",
    "download",
    "fetch_dir",
    "upload",
]

log = logging.getLogger(__name__)

MAX_TRIES_PER_CHUNK = 3
_PIECE = 64 * 1024


_MISMATCH = "its sha256 does not match the chunk manifest"
_NOT_HERE = ": does not have it"


def _sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _intact_chunks(partial: Partial, manifest: ChunkManifest) -> set[int]:
    """Chunks of a partial file left by an earlier attempt that already hash right."""
    intact = set()
    for index, expected in enumerate(manifest.chunks):
        offset, length = manifest.chunk_span(index)
        if _sha256(partial.read_at(offset, length)) == expected:
            intact.add(index)
    return intact


def _hash_range(partial: Partial, whole: hashlib._Hash, start: int, end: int) -> None:
    block = 4 << 20
    while start < end:
        data = partial.read_at(start, min(block, end - start))
        whole.update(data)
        start += len(data)


def _read_chunk(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


class _Sources:
    """The locations still worth asking for one object, best first, and what each said when
    asked to verify its copy (one question per location and transfer)."""

    def __init__(self, sha: str, bases: list[str]) -> None:
        self.sha = sha
        self.bases = list(bases)
        self.failures: list[str] = []
        self.verdicts: dict[str, asyncio.Task[bool | None]] = {}
        self.quarantined: list[str] = []
        self.unreachable = False
        """A dropped location could not be reached (rather than lacking the object)."""

    def current(self) -> str:
        if not self.bases and self.quarantined:
            raise TransferError(
                f"object {self.sha} is no longer served anywhere: the copy at "
                f"{', '.join(self.quarantined)} was corrupt and is now quarantined there"
                + "".join(f"; {failure}" for failure in self.failures)
                + "; `stageflow runs retry RUN` re-runs the stage that made it"
            )
        if not self.bases and self.failures and not self.unreachable:
            # Every location answered that it lacks the object (e.g. another stream's verify
            # request had it quarantined a moment ago).
            raise TransferError(
                f"object {self.sha} is no longer served anywhere ({'; '.join(self.failures)}): "
                "`stageflow runs retry RUN` re-runs the stage that made it"
            )
        if not self.bases:
            raise TransferError(
                f"no location could serve object {self.sha}: " + "; ".join(self.failures)
            )
        return self.bases[0]

    def drop(self, base: str, reason: object) -> None:
        if self.bases and self.bases[0] == base:
            self.bases.pop(0)
            self.failures.append(f"{base}: {reason}")
            self.unreachable = self.unreachable or not isinstance(reason, NotHere)

    def drop_quarantined(self, base: str) -> None:
        if base not in self.quarantined:
            self.quarantined.append(base)
        if self.bases and self.bases[0] == base:
            self.bases.pop(0)

    def forget(self) -> None:
        """Stop verifications still in flight (the transfer is over)."""
        for verdict in self.verdicts.values():
            verdict.cancel()


class _Client(Session):
    """A session that moves objects: the download and upload algorithms."""

    # -- download ---------------------------------------------------------------------------

    async def _get_manifest(self, base: str, sha: str) -> ChunkManifest:
        response = await self.client.get(f"{base}/v1/objects/{sha}/chunks")
        await check_response(response, f"chunk manifest of {sha}")
        return ChunkManifest.from_json(response.content, expect_sha=sha)

    async def _get_range(
        self,
        base: str,
        manifest: ChunkManifest,
        offset: int,
        length: int,
        zstd: bool,
        into: bytearray,
    ) -> memoryview | bytearray:
        last = offset + length - 1
        if not zstd and self.limiter is None:
            view = memoryview(into)[:length]
            try:
                await self.fast.get_into(base, manifest.sha256, offset, last, manifest.size, view)
            except Fallback:
                pass
            else:
                self.stats.bytes_received += length
                return view
        headers = {
            "Range": f"bytes={offset}-{last}",
            "Accept-Encoding": "zstd" if zstd else "identity",
        }
        url = f"{base}/v1/objects/{manifest.sha256}"
        async with self.client.stream("GET", url, headers=headers) as response:
            await check_response(response, f"bytes {offset}-{last} of {manifest.sha256}")
            expected_range = f"bytes {offset}-{last}/{manifest.size}"
            if response.status_code != 206 or response.headers.get("content-range") != (
                expected_range
            ):
                raise PeerRejectedError(
                    f"{base} did not honour Range {offset}-{last} (answered "
                    f"{response.status_code}, {response.headers.get('content-range')!r})"
                )
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding not in ("identity", "zstd"):
                raise PeerRejectedError(f"{base} sent Content-Encoding {encoding!r}")
            unpack = BoundedDecompressor(length) if encoding == "zstd" else None
            target = memoryview(into)
            filled = 0
            buffer: memoryview | bytearray = target[:0]
            async for raw in response.aiter_raw():
                self.stats.bytes_received += len(raw)
                await self.throttle(len(raw))
                if unpack is not None:
                    try:
                        unpack.feed(raw)
                    except ValueError as exc:
                        raise BadBody(str(exc)) from None
                else:
                    if filled + len(raw) > length:
                        raise BadBody(f"more than the {length} bytes asked for")
                    target[filled : filled + len(raw)] = raw
                    filled += len(raw)
            buffer = target[:filled]
            if unpack is not None:
                try:
                    buffer = unpack.result()
                except ValueError as exc:
                    raise BadBody(str(exc)) from None
        if len(buffer) != length:
            raise BadBody(f"{len(buffer)} bytes instead of {length}")
        return buffer

    async def _fetch_chunk(
        self,
        sources: _Sources,
        manifest: ChunkManifest,
        index: int,
        zstd: bool,
        into: bytearray,
    ) -> memoryview | bytearray:
        offset, length = manifest.chunk_span(index)
        wrong = 0
        while True:
            base = sources.current()
            try:
                data = await self.retrying(
                    f"chunk {index} of {manifest.sha256} from {base}",
                    functools.partial(self._get_range, base, manifest, offset, length, zstd, into),
                )
                problem = None
                if await asyncio.to_thread(_sha256, data) != manifest.chunks[index]:
                    problem = _MISMATCH
            except (NotHere, Unreachable) as exc:
                sources.drop(base, exc)
                continue
            except BadBody as exc:
                problem = str(exc)
            if problem is None:
                return data
            if problem == _MISMATCH and await self._quarantined(sources, base):
                sources.drop_quarantined(base)
                wrong = 0
                continue
            wrong += 1
            if wrong >= MAX_TRIES_PER_CHUNK:
                raise IntegrityError(
                    f"chunk {index} (bytes {offset}-{offset + length - 1}) of object "
                    f"{manifest.sha256} from {base} arrived wrong {wrong} times ({problem}): "
                    f"the copy at {base} is likely corrupt; remove it there or fetch from "
                    "another location"
                )
            self.stats.chunks_refetched += 1

    async def _quarantined(self, sources: _Sources, base: str) -> bool:
        """Whether ``base``, asked to verify its copy, found it corrupt and quarantined it.

        Asked once per location and transfer (streams share the answer); best effort: a
        failed question is logged and counts as no (the chunk is fetched again as before).
        """
        verdict = sources.verdicts.get(base)
        if verdict is None:
            verdict = asyncio.create_task(self._ask_verify(base, sources.sha))
            sources.verdicts[base] = verdict
        return await asyncio.shield(verdict) is True

    async def _ask_verify(self, base: str, sha: str) -> bool | None:
        try:
            response = await self.client.post(f"{base}/v1/objects/{sha}/verify")
            await check_response(response, f"verifying {sha} at {base}")
            answer = response.json()
            quarantined = bool(answer["quarantined"])
        except Exception as exc:  # best effort: the strikes still catch a bad copy
            log.warning("could not ask %s to verify object %s: %s", base, sha, exc)
            return None
        self.stats.copies_quarantined += quarantined
        log.warning(
            "%s served a wrong chunk of %s; its stored copy is %s",
            base,
            sha,
            "corrupt, now quarantined there" if quarantined else "intact (a wire error)",
        )
        return quarantined

    async def _lock_partial(self, store: ContentStore, sha: str, size: int) -> Partial | None:
        """Open ``partial/<sha>``, waiting while another transfer holds it; None if it landed."""
        while True:
            if store.has(sha):
                return None
            try:
                return await asyncio.to_thread(store.open_partial, sha, size)
            except PartialBusyError:
                await asyncio.sleep(0.1)

    async def download(
        self,
        sha: str,
        bases: list[str],
        store: ContentStore,
        *,
        zstd: bool,
        progress: Progress | None,
    ) -> Path:
        sha = validate_sha(sha)
        failures = []
        for i, base in enumerate(bases):
            if store.has(sha):
                break
            try:
                manifest = await self.retrying(
                    f"chunk manifest of {sha} from {base}",
                    functools.partial(self._get_manifest, base, sha),
                )
            except NotHere:
                failures.append(f"{base}{_NOT_HERE}")
                continue
            except Unreachable as exc:
                failures.append(str(exc))
                continue
            except ValueError as exc:
                failures.append(f"{base}: sent a bad chunk manifest ({exc})")
                continue
            await self._receive(store, manifest, _Sources(sha, bases[i:]), zstd, progress)
            return store.path(sha)
        if store.has(sha):
            return store.path(sha)
        if all(failure.endswith(_NOT_HERE) for failure in failures):
            raise TransferError(
                f"object {sha} is no longer served anywhere ({'; '.join(failures)}): "
                "`stageflow runs retry RUN` re-runs the stage that made it"
            )
        raise TransferError(f"could not fetch object {sha}: " + "; ".join(failures))

    async def _receive(
        self,
        store: ContentStore,
        manifest: ChunkManifest,
        sources: _Sources,
        zstd: bool,
        progress: Progress | None,
    ) -> None:
        sha = manifest.sha256
        partial = await self._lock_partial(store, sha, manifest.size)
        if partial is None:
            return
        try:
            intact: set[int] = set()
            if partial.existed:
                intact = await asyncio.to_thread(_intact_chunks, partial, manifest)
            self.stats.chunks_reused += len(intact)
            reused = sum(manifest.chunk_span(i)[1] for i in intact)
            tally = Tally(manifest.size, reused, progress)
            pending = deque(i for i in range(manifest.count) if i not in intact)

            landed = set(intact)
            wake = asyncio.Event()
            whole = hashlib.sha256()

            async def stream() -> None:
                into = bytearray(manifest.chunk_size)
                while pending:
                    index = pending.popleft()
                    data = await self._fetch_chunk(sources, manifest, index, zstd, into)
                    offset = manifest.chunk_span(index)[0]
                    await asyncio.to_thread(partial.write_at, offset, data)
                    self.stats.chunks_transferred += 1
                    landed.add(index)
                    wake.set()
                    tally.add(len(data))

            async def hash_in_order() -> None:
                # the whole-file sha256, fed chunk by chunk in order as they land
                # (read back from the page cache), so no second pass is needed at the end
                nxt = 0
                while nxt < manifest.count:
                    if nxt not in landed:
                        wake.clear()
                        await wake.wait()
                        continue
                    end = nxt
                    while end < manifest.count and end in landed:
                        end += 1
                    first = manifest.chunk_span(nxt)[0]
                    last_off, last_len = manifest.chunk_span(end - 1)
                    await asyncio.to_thread(_hash_range, partial, whole, first, last_off + last_len)
                    nxt = end

            tasks = [stream() for _ in range(min(self.streams, len(pending)))]
            await run_all([*tasks, hash_in_order()])
            if whole.hexdigest() != sha:
                raise IntegrityError(
                    f"received bytes hash to {whole.hexdigest()}, not {sha}: the transfer "
                    "was discarded; the source copy may be corrupt"
                )
            await asyncio.to_thread(store.commit_partial, sha, manifest, hashed=True)
        except (IntegrityError, DiskFullError):
            partial.close()
            store.discard_partial(sha)
            raise
        finally:
            sources.forget()
            partial.close()

    # -- upload -----------------------------------------------------------------------------

    async def _put(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        async def pieces() -> Any:
            view = memoryview(body)
            for start in range(0, len(view), _PIECE):
                piece = bytes(view[start : start + _PIECE])
                await self.throttle(len(piece))
                self.stats.bytes_sent += len(piece)
                yield piece

        response = await self.client.put(url, content=pieces(), headers=headers)
        await check_response(response, f"PUT {url}")

    async def _send_chunk(
        self, base: str, store: ContentStore, manifest: ChunkManifest, index: int, zstd: bool
    ) -> int:
        sha = manifest.sha256
        offset, length = manifest.chunk_span(index)
        data = await asyncio.to_thread(_read_chunk, store.path(sha), offset, length)
        if await asyncio.to_thread(_sha256, data) != manifest.chunks[index]:
            raise IntegrityError(
                f"the local copy of {sha} at {store.path(sha)} is corrupt (chunk {index}): "
                "remove it and fetch or produce it again"
            )
        headers = {"X-Chunk-Sha256": manifest.chunks[index]}
        body = data
        if zstd:
            packed = await asyncio.to_thread(compress, data)
            if len(packed) < len(data):
                body, headers["Content-Encoding"] = packed, "zstd"
        headers["Content-Length"] = str(len(body))
        headers["Content-Type"] = "application/octet-stream"
        url = f"{base}/v1/uploads/{sha}/chunks/{index}"
        for attempt in range(1, MAX_TRIES_PER_CHUNK + 1):
            try:
                what = f"chunk {index} of {sha} to {base}"
                await self.retrying(what, lambda: self._put(url, body, headers))
                return length
            except StatusError as exc:
                if exc.status != 422 or attempt == MAX_TRIES_PER_CHUNK:
                    raise IntegrityError(
                        f"{base} refused chunk {index} of {sha} {attempt} times: {exc}"
                    ) from None
                self.stats.chunks_refetched += 1
        raise AssertionError("unreachable")

    async def _send_missing(
        self,
        base: str,
        store: ContentStore,
        manifest: ChunkManifest,
        received: set[int],
        zstd: bool,
        progress: Progress | None,
    ) -> None:
        """Send, over parallel streams, every chunk the peer does not have yet."""
        received &= set(range(manifest.count))
        self.stats.chunks_reused += len(received)
        done = sum(manifest.chunk_span(i)[1] for i in received)
        tally = Tally(manifest.size, done, progress)
        pending = deque(i for i in range(manifest.count) if i not in received)

        async def stream() -> None:
            while pending:
                index = pending.popleft()
                sent = await self._send_chunk(base, store, manifest, index, zstd)
                self.stats.chunks_transferred += 1
                tally.add(sent)

        await run_all(stream() for _ in range(min(self.streams, len(pending))))

    async def upload(
        self,
        sha: str,
        store: ContentStore,
        base: str,
        *,
        zstd: bool,
        progress: Progress | None,
    ) -> None:
        manifest = await asyncio.to_thread(store.chunk_manifest, sha)
        what = f"upload of {sha} to {base}"
        start = {"sha256": sha, "size": manifest.size, "chunk_size": manifest.chunk_size}

        async def post(path: str, body: dict[str, Any] | None = None) -> Any:
            response = await self.client.post(f"{base}{path}", json=body)
            await check_response(response, what)
            return response.json()

        for _ in range(3):
            try:
                answer = await self.retrying(what, lambda: post("/v1/uploads", start))
                if answer.get("complete"):
                    Tally(manifest.size, manifest.size, progress)
                    return
                received = {int(i) for i in answer.get("received", [])}
                await self._send_missing(base, store, manifest, received, zstd, progress)
                await self.retrying(what, lambda: post(f"/v1/uploads/{sha}/commit"))
                return
            except NotHere:
                continue  # the peer lost or discarded the upload: start it again
            except StatusError as exc:
                if exc.status == 422:
                    raise IntegrityError(
                        f"{what}: the peer's whole-file check failed: {exc}"
                    ) from None
                continue  # 409: chunks missing on the peer; ask again which
            except Unreachable as exc:
                raise TransferError(str(exc)) from exc
        raise TransferError(f"{what} did not complete after 3 rounds")


def _session(
    token: str,
    streams: int,
    bandwidth: float | None,
    stats: TransferStats | None,
    retries: int,
    timeout: float,
) -> _Client:
    return _Client(
        token=token,
        streams=streams,
        bandwidth=bandwidth,
        stats=stats,
        retries=retries,
        timeout=timeout,
    )


async def download(
    sha: str,
    locations: list[str],
    store: ContentStore,
    *,
    token: str,
    streams: int = 4,
    bandwidth: float | None = None,
    compress: bool = False,
    progress: Progress | None = None,
    stats: TransferStats | None = None,
    retries: int = 5,
    timeout: float = 60.0,
) -> Path:
    """Fetch object ``sha`` into ``store`` from the first of ``locations`` that has it.

    Locations are tried in the order given (put the data server last, as the refs do).

    Returns the object's path in the store. ``bandwidth`` caps bytes/s over all streams;
    ``compress`` asks peers for zstd bodies. Raises AuthError (token refused), IntegrityError
    (source corrupt), DiskFullError (no room here; nothing left behind) or TransferError
    (every location failed; the partial file is kept so that a retry resumes).
    """
    sha = validate_sha(sha)
    if store.has(sha):
        return store.path(sha)
    bases = base_urls(locations)
    async with _session(token, streams, bandwidth, stats, retries, timeout) as session:
        return await session.download(sha, bases, store, zstd=compress, progress=progress)


async def upload(
    sha: str,
    store: ContentStore,
    base_url: str,
    *,
    token: str,
    streams: int = 4,
    bandwidth: float | None = None,
    compress: bool = False,
    progress: Progress | None = None,
    stats: TransferStats | None = None,
    retries: int = 5,
    timeout: float = 60.0,
) -> None:
    """Push object ``sha`` from ``store`` to the peer at ``base_url``, resuming what it has.

    Raises AuthError, DiskFullError (the peer has no room), PeerRejectedError (e.g. over the
    peer's upload limit), IntegrityError, or TransferError (network; retrying resumes).
    """
    sha = validate_sha(sha)
    (base,) = base_urls([base_url])
    async with _session(token, streams, bandwidth, stats, retries, timeout) as session:
        await session.upload(sha, store, base, zstd=compress, progress=progress)


async def fetch_dir(
    sha: str,
    locations: list[str],
    store: ContentStore,
    *,
    token: str,
    streams: int = 4,
    bandwidth: float | None = None,
    compress: bool = False,
    progress: Progress | None = None,
    stats: TransferStats | None = None,
    retries: int = 5,
    timeout: float = 60.0,
) -> DirManifest:
    """Fetch directory manifest ``sha`` and every object it names that ``store`` lacks.

    Objects move ``streams`` at a time over at most ``streams`` connections; ``progress``
    counts the bytes of the directory's files (a file listed twice counts twice, as in the
    ref's ``size``, though its object moves once). Materialize it with ``store.materialize``.
    """
    sha = validate_sha(sha)
    bases = base_urls(locations)
    async with _session(token, streams, bandwidth, stats, retries, timeout) as session:
        await session.download(sha, bases, store, zstd=compress, progress=None)
        try:
            manifest = await asyncio.to_thread(store.dir_manifest, sha)
        except ValueError as exc:
            raise PeerRejectedError(f"object {sha} is not a directory manifest: {exc}") from None
        sizes = {entry.sha256: entry.size for entry in manifest.entries}
        copies = Counter(entry.sha256 for entry in manifest.entries)
        missing = [s for s in sizes if not store.has(s)]
        done = dict.fromkeys(missing, 0)
        present = manifest.size - sum(sizes[s] * copies[s] for s in missing)
        tally = Tally(manifest.size, present, progress)
        gate = asyncio.Semaphore(streams)

        async def one(object_sha: str) -> None:
            def report(n: int, _total: int) -> None:
                tally.add((n - done[object_sha]) * copies[object_sha])
                done[object_sha] = n

            async with gate:
                await session.download(object_sha, bases, store, zstd=compress, progress=report)

        await run_all(one(s) for s in missing)
    return manifest
