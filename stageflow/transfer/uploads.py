"""Server-side state of resumable uploads: which chunks of ``partial/<sha>`` are verified.

The state lives on disk beside the partial file, as ``partial/<sha>.upload``, so that a server
restarted mid-upload resumes where the client left off. Its first line is ``{"size",
"chunk_size"}``; each further line is the index of a chunk that arrived and matched the
sha256 its sender claimed. Lines are appended (one small ``O_APPEND`` write each), so recording
a chunk costs the same for the first chunk of a terabyte as for the last.

A recorded chunk is only a promise: ``commit`` hashes the whole file before anything enters
``objects/``, so a lying or buggy client can waste its own upload but never plant wrong bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field

from stageflow.transfer.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, validate_sha
from stageflow.transfer.store import ContentStore, ObjectInfo, PartialBusyError

__all__ = ["UploadError", "UploadState", "Uploads"]

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class UploadError(Exception):
    """A request the upload protocol refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class UploadState:
    """One upload in progress."""

    size: int
    chunk_size: int
    received: set[int] = field(default_factory=set)

    @property
    def count(self) -> int:
        return -(-self.size // self.chunk_size)

    def span(self, index: int) -> tuple[int, int]:
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.received]


class Uploads:
    """Starts, records and commits uploads into one store (thread-safe, restart-safe)."""

    def __init__(self, store: ContentStore, *, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._states: dict[str, UploadState] = {}

    def _sha_lock(self, sha: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(sha, threading.Lock())

    def _log_path(self, sha: str) -> os.PathLike[str]:
        return self.store.partial_dir / f"{validate_sha(sha)}.upload"

    def _load(self, sha: str) -> UploadState | None:
        """The cached state, or the one a previous server process left on disk."""
        if sha in self._states:
            return self._states[sha]
        try:
            with open(self._log_path(sha), encoding="ascii") as log:
                header = json.loads(log.readline())
                state = UploadState(int(header["size"]), int(header["chunk_size"]))
                for line in log:
                    if line.endswith("\n") and line.strip().isdigit():
                        state.received.add(int(line))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            self.store.discard_partial(sha)  # an unreadable log: start that upload over
            return None
        try:
            partial_size = self.store.partial_path(sha).stat().st_size
        except FileNotFoundError:
            partial_size = -1
        if partial_size != state.size or state.chunk_size < 1:
            self.store.discard_partial(sha)
            return None
        state.received = {i for i in state.received if i < state.count}
        self._states[sha] = state
        return state

    def begin(self, sha: str, size: int, chunk_size: int) -> tuple[list[int], bool]:
        """Start or resume an upload; returns (indices already received, complete)."""
        sha = validate_sha(sha)
        if size < 0:
            raise UploadError(400, f"size must be >= 0, got {size}")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise UploadError(
                400, f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
            )
        if size > self.max_bytes:
            raise UploadError(
                413,
                f"object {sha} is {size} bytes; this server accepts uploads of at most "
                f"{self.max_bytes} bytes (raise max_upload_bytes, or send it elsewhere)",
            )
        if self.store.has(sha):
            return list(range(-(-size // chunk_size))), True
        with self._sha_lock(sha):
            state = self._load(sha)
            if state is not None and (state.size, state.chunk_size) == (size, chunk_size):
                return sorted(state.received), False
            self._states.pop(sha, None)
            self.store.discard_partial(sha)
            try:
                self.store.open_partial(sha, size).close()  # DiskFullError: nothing left
            except PartialBusyError:
                raise UploadError(409, f"{sha} is being received by another transfer") from None
            header = json.dumps({"size": size, "chunk_size": chunk_size}) + "\n"
            with open(self._log_path(sha), "w", encoding="ascii") as log:
                log.write(header)
            self._states[sha] = UploadState(size, chunk_size)
            return [], False

    def state(self, sha: str) -> UploadState:
        sha = validate_sha(sha)
        with self._sha_lock(sha):
            state = self._load(sha)
        if state is None:
            raise UploadError(404, f"no upload of {sha} in progress: POST /v1/uploads first")
        return state

    def put_chunk(self, sha: str, index: int, data: bytes, claimed_sha: str) -> None:
        """Verify one chunk against ``claimed_sha``, write it at its offset, record it."""
        state = self.state(sha)
        if not 0 <= index < state.count:
            raise UploadError(400, f"chunk index {index} out of range 0..{state.count - 1}")
        offset, length = state.span(index)
        if len(data) != length:
            raise UploadError(400, f"chunk {index} must be {length} bytes, got {len(data)}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != claimed_sha:
            raise UploadError(
                422,
                f"chunk {index} arrived corrupted (sha256 {actual}, X-Chunk-Sha256 "
                f"{claimed_sha}): send it again",
            )
        with self._sha_lock(sha):
            if self._states.get(sha) is not state:
                raise UploadError(404, f"the upload of {sha} was restarted: POST /v1/uploads")
            try:
                fd = os.open(self.store.partial_path(sha), os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._states.pop(sha, None)
                raise UploadError(404, f"the upload of {sha} was discarded: start over") from None
            try:
                view = memoryview(data)
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
            except OSError as exc:
                if exc.errno in _DISK_FULL_ERRNOS:
                    self._states.pop(sha, None)
                    self.store.discard_partial(sha)
                    raise self.store.disk_full(f"receiving {sha}", state.size) from exc
                raise
            finally:
                os.close(fd)
            with open(self._log_path(sha), "a", encoding="ascii") as log:
                log.write(f"{index}\n")
            state.received.add(index)

    def commit(self, sha: str) -> ObjectInfo:
        """Hash the whole upload; move it into the store or discard it (IntegrityError)."""
        sha = validate_sha(sha)
        if self.store.has(sha):
            return self.store.info(sha)
        with self._sha_lock(sha):
            state = self._load(sha)
            if state is None:
                raise UploadError(404, f"no upload of {sha} in progress: POST /v1/uploads first")
            missing = state.missing()
            if missing:
                shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
                raise UploadError(
                    409, f"{len(missing)} chunk(s) of {sha} not received yet: {shown}"
                )
            self._states.pop(sha, None)
            try:
                return self.store.commit_partial(sha)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._log_path(sha))
                with self._lock:
                    self._locks.pop(sha, None)
