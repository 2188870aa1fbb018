"""Content addresses, chunk manifests and directory manifests: the documents peers exchange.

Everything here may have come from another machine, so parsing checks every property a later
step relies on (64 lowercase hex digits, a chunk count that fits the size, relative paths with
no ``..``). A bad document is a ``ValueError`` at the boundary, never a surprise inside a
filesystem call. ``ChunkHasher`` computes an object's hash and its chunk manifest in one pass,
so an object is read once when it first lands in a store.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

__all__ = [
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "ChunkHasher",
    "ChunkManifest",
    "DirEntry",
    "DirManifest",
    "validate_sha",
]

MIN_CHUNK_SIZE = 4 * 1024
"""Smaller chunks would make manifests and per-chunk requests dominate the transfer."""
MAX_CHUNK_SIZE = 64 * 1024 * 1024
"""A peer's chunk size sets our per-stream buffer, so it is bounded."""

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_MAX_PATH = 4096


def validate_sha(value: object) -> str:
    """Return ``value`` if it is a sha256 content address (``^[0-9a-f]{64}$``), else ValueError.

    Every name that reaches the store's filesystem passes through here, which is what makes
    path traversal impossible: a content address has no ``/`` or ``.`` to abuse.
    """
    if isinstance(value, str) and _SHA_RE.fullmatch(value):
        return value
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ValueError(f"not a sha256 content address (64 lowercase hex digits): {shown}")


def _int(doc: dict[str, Any], key: str, *, low: int, high: int | None = None) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key!r} must be an integer, got {value!r:.40}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{key!r} must be {bound}, got {value}")
    return value


def _load_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} must be a JSON object")
    return doc


@dataclass(frozen=True)
class ChunkManifest:
    """An object's hash, size, and the sha256 of each ``chunk_size`` slice of it."""

    sha256: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.chunks)

    def chunk_span(self, index: int) -> tuple[int, int]:
        """``(offset, length)`` of chunk ``index``; the last chunk may be short."""
        if not 0 <= index < len(self.chunks):
            raise IndexError(f"chunk {index} out of range: the object has {len(self.chunks)}")
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)

    def to_json(self) -> bytes:
        doc = {
            "sha256": self.sha256,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": list(self.chunks),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, expect_sha: str | None = None) -> ChunkManifest:
        """Parse and check a manifest; ``expect_sha`` is the object it must describe."""
        doc = _load_object(data, "chunk manifest")
        sha = validate_sha(doc.get("sha256"))
        if expect_sha is not None and sha != expect_sha:
            raise ValueError(f"chunk manifest describes {sha}, not {expect_sha}")
        size = _int(doc, "size", low=0)
        chunk_size = _int(doc, "chunk_size", low=1, high=MAX_CHUNK_SIZE)
        chunks = doc.get("chunks")
        if not isinstance(chunks, list):
            raise ValueError("'chunks' must be a list of sha256 hex digests")
        expected = -(-size // chunk_size)
        if len(chunks) != expected:
            raise ValueError(
                f"chunk manifest lists {len(chunks)} chunks; "
                f"{size} bytes in {chunk_size}-byte chunks make {expected}"
            )
        return cls(sha, size, chunk_size, tuple(validate_sha(c) for c in chunks))


class ChunkHasher:
    """Feed an object's bytes in order; get its sha256 and chunk manifest in the same pass."""

    def __init__(self, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self._whole = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._in_chunk = 0
        self._chunks: list[str] = []
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self._whole.update(view)
        self.size += len(view)
        while view:
            take = min(len(view), self.chunk_size - self._in_chunk)
            self._chunk.update(view[:take])
            self._in_chunk += take
            view = view[take:]
            if self._in_chunk == self.chunk_size:
                self._chunks.append(self._chunk.hexdigest())
                self._chunk = hashlib.sha256()
                self._in_chunk = 0

    def finish(self) -> ChunkManifest:
        chunks = list(self._chunks)
        if self._in_chunk:
            chunks.append(self._chunk.hexdigest())
        return ChunkManifest(self._whole.hexdigest(), self.size, self.chunk_size, tuple(chunks))


def _check_rel_path(path: object) -> str:
    """A manifest path: relative, ``/``-separated, no empty, ``.`` or ``..`` parts, no NUL."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"entry path must be a non-empty string, got {path!r:.60}")
    if len(path) > _MAX_PATH or "\x00" in path:
        raise ValueError(f"entry path is too long or holds a NUL byte: {path!r:.60}")
    parts = path.split("/")
    if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"entry path {path!r:.200} must be relative, with no empty, '.' or '..' parts"
        )
    return path


@dataclass(frozen=True)
class DirEntry:
    """One file of a directory: where it goes, which object holds it, its permission bits."""

    path: str
    sha256: str
    size: int
    mode: int

    def to_doc(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "mode": self.mode}


@dataclass(frozen=True)
class DirManifest:
    """A directory as a sorted list of files; its canonical JSON is itself an object."""

    entries: tuple[DirEntry, ...]

    def __post_init__(self) -> None:
        _check_entries(self.entries)

    @property
    def size(self) -> int:
        """The sum of the files' sizes: what a ``kind: dir`` ref reports as its size."""
        return sum(entry.size for entry in self.entries)

    def to_json(self) -> bytes:
        """The canonical form whose sha256 names the directory (see docs/data-plane.md)."""
        doc = {"entries": [entry.to_doc() for entry in self.entries]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> DirManifest:
        doc = _load_object(data, "directory manifest")
        raw = doc.get("entries")
        if not isinstance(raw, list):
            raise ValueError("directory manifest must hold an 'entries' list")
        entries = []
        for item in raw:
            if not isinstance(item, dict):
                raise ValueError("each directory manifest entry must be a JSON object")
            entries.append(
                DirEntry(
                    path=_check_rel_path(item.get("path")),
                    sha256=validate_sha(item.get("sha256")),
                    size=_int(item, "size", low=0),
                    mode=_int(item, "mode", low=0, high=0o777),
                )
            )
        return cls(tuple(entries))


def _check_entries(entries: Iterable[DirEntry]) -> None:
    """Sorted, unique, and no file that is also another file's parent directory."""
    previous: str | None = None
    files: set[str] = set()
    for entry in entries:
        _check_rel_path(entry.path)
        validate_sha(entry.sha256)
        if not 0 <= entry.mode <= 0o777:
            raise ValueError(f"{entry.path}: mode {entry.mode:o} is outside 0..777")
        if previous is not None and entry.path <= previous:
            raise ValueError(
                f"directory manifest entries must be sorted by path with no duplicates: "
                f"{entry.path!r} follows {previous!r}"
            )
        previous = entry.path
        files.add(entry.path)
    for path in files:
        for parent in PurePosixPath(path).parents:
            if str(parent) in files:
                raise ValueError(f"{parent} is listed as a file and as the directory of {path}")
