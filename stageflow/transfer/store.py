"""The content-addressed store every stageflow process keeps under its staging dir.

Layout (docs/data-plane.md)::

    <root>/objects/<sha[:2]>/<sha>          the bytes, read-only once in place
    <root>/objects/<sha[:2]>/<sha>.chunks   JSON chunk manifest, written in the same pass
    <root>/partial/<sha>                    downloads/uploads in progress (+ <sha>.<x> sidecars)
    <root>/tmp/                             temp files for atomic writes
    <root>/quarantine/<stamp>-<sha>[.chunks] objects found corrupt, kept for an operator

Why it is built this way:

* Objects land by temp file, fsync, hash check, ``os.rename``: a reader never sees half an
  object, and a crash leaves at worst a stray temp file, never a wrong object.
* Every name is a content address checked by ``validate_sha`` before any path is built, so no
  peer-supplied string can name a file outside the store.
* A full disk (ENOSPC/EDQUOT) anywhere becomes ``DiskFullError`` after the half-written file is
  removed, so a failed write never occupies ``objects/`` or ``partial/``.
* Partial files are allocated at full size up front (``posix_fallocate``): a transfer that would
  not fit fails before the first byte moves instead of at 90 %.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from stageflow.errors import DiskFullError, IntegrityError
from stageflow.transfer import dirs
from stageflow.transfer._fs import DISK_FULL, NO_LINK, allocate, fsync_dir, unlink
from stageflow.transfer.manifest import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkHasher,
    ChunkManifest,
    DirManifest,
    validate_sha,
)
from stageflow.transfer.partial import Partial, PartialBusyError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ContentStore",
    "ObjectInfo",
    "Partial",
    "PartialBusyError",
    "StoreStatus",
    "validate_sha",
]

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What names an object (or, for a directory, its manifest) and how big it is."""

    sha256: str
    size: int


@dataclass(frozen=True)
class StoreStatus:
    """Disk space and entry counts, as served by ``GET /v1/staging/status``."""

    root: str
    disk_total: int
    disk_used: int
    disk_free: int
    objects: int
    object_bytes: int
    partials: int
    inputs: int
    outputs: int
    quarantined: int
    """Objects found corrupt and moved to ``quarantine/`` (``stageflow gc`` leaves them)."""

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


class ContentStore:
    """Objects named by their sha256, written atomically, with chunk manifests beside them."""

    def __init__(self, root: Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(
                f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes "
                f"(peers refuse others), got {chunk_size}"
            )
        self.root = Path(root)
        self.chunk_size = chunk_size
        self.objects_dir = self.root / "objects"
        self.partial_dir = self.root / "partial"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        for directory in (self.objects_dir, self.partial_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # -- names -------------------------------------------------------------------------------

    def path(self, sha: str) -> Path:
        """Where object ``sha`` lives (whether or not it is there yet)."""
        sha = validate_sha(sha)
        return self.objects_dir / sha[:2] / sha

    def partial_path(self, sha: str) -> Path:
        return self.partial_dir / validate_sha(sha)

    def _manifest_path(self, sha: str) -> Path:
        return self.path(sha).with_name(f"{sha}.chunks")

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def info(self, sha: str) -> ObjectInfo:
        """Size of a stored object; FileNotFoundError when it is not here."""
        try:
            return ObjectInfo(sha, self.path(sha).stat().st_size)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {sha} in the store at {self.root}") from None

    def disk_full(self, doing: str, needed: int | None = None) -> DiskFullError:
        """A DiskFullError that says where, how much was needed, and how much is free."""
        free = shutil.disk_usage(self.root).free
        need = f" ({needed} bytes needed, {free} free)" if needed is not None else f" ({free} free)"
        return DiskFullError(
            f"no space left on the filesystem of {self.root} while {doing}{need}: free some "
            "space or point the staging dir at a larger filesystem"
        )

    # -- writing whole objects ---------------------------------------------------------------

    def _tmp(self) -> Path:
        return self.tmp_dir / f"{secrets.token_hex(8)}.tmp"

    def _write_tmp(
        self, blocks: Iterator[bytes], doing: str, needed: int | None = None
    ) -> tuple[Path, ChunkManifest]:
        """Write blocks to a fsynced temp file, hashing them on the way."""
        tmp = self._tmp()
        hasher = ChunkHasher(self.chunk_size)
        try:
            with open(tmp, "xb") as out:
                for block in blocks:
                    hasher.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            unlink(tmp)
            if exc.errno in DISK_FULL:
                raise self.disk_full(doing, needed) from exc
            raise
        except BaseException:
            unlink(tmp)
            raise
        return tmp, hasher.finish()

    def _write_manifest(self, manifest: ChunkManifest) -> None:
        target = self._manifest_path(manifest.sha256)
        target.parent.mkdir(exist_ok=True)
        tmp, _ = self._write_tmp(iter([manifest.to_json()]), "writing a chunk manifest")
        os.rename(tmp, target)

    def _install(self, tmp: Path, manifest: ChunkManifest, *, read_only: bool = True) -> None:
        """Move a verified temp file into ``objects/``, its chunk manifest first."""
        target = self.path(manifest.sha256)
        if target.exists():
            unlink(tmp)
            return
        try:
            self._write_manifest(manifest)
        except BaseException:
            unlink(tmp)
            raise
        if read_only:
            os.chmod(tmp, 0o444)
        os.rename(tmp, target)
        fsync_dir(target.parent)

    def put_bytes(self, data: bytes) -> ObjectInfo:
        """Store ``data``; returns its address. Storing the same bytes twice is a no-op."""
        view = memoryview(data)
        blocks = (bytes(view[i : i + _BLOCK]) for i in range(0, len(view), _BLOCK))
        tmp, manifest = self._write_tmp(blocks, "storing an object", len(view))
        self._install(tmp, manifest)
        return ObjectInfo(manifest.sha256, manifest.size)

    def put_file(self, path: Path, *, link: bool = False) -> ObjectInfo:
        """Store a regular file: copy, hash and chunk it in one pass, or hard-link it.

        ``link=True`` (for files nobody will write again, such as a finished stage's outputs)
        hashes the file and hard-links it in, falling back to a copy across filesystems. The
        file must not change while it is stored; a change seen on the way is an error.
        """
        src = Path(path)
        before = os.stat(src)
        if not stat.S_ISREG(before.st_mode):
            raise ValueError(f"{src} is not a regular file")
        if link and before.st_dev == os.stat(self.tmp_dir).st_dev:
            linked = self._try_link(src, before)
            if linked is not None:
                return linked
        with open(src, "rb") as f:
            blocks = iter(lambda: f.read(_BLOCK), b"")
            tmp, manifest = self._write_tmp(blocks, f"storing {src}", before.st_size)
        self._install(tmp, manifest)
        return ObjectInfo(manifest.sha256, manifest.size)

    def _try_link(self, src: Path, before: os.stat_result) -> ObjectInfo | None:
        hasher = ChunkHasher(self.chunk_size)
        with open(src, "rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                hasher.update(block)
        manifest = hasher.finish()
        tmp = self._tmp()
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno in NO_LINK:
                return None
            raise
        after = os.stat(tmp)
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        ):
            unlink(tmp)
            raise ValueError(f"{src} changed while it was being stored; store it once it is done")
        self._install(tmp, manifest, read_only=False)
        return ObjectInfo(manifest.sha256, manifest.size)

    # -- reading ------------------------------------------------------------------------------

    def chunk_manifest(self, sha: str) -> ChunkManifest:
        """The object's chunk manifest, recomputed (and the object re-verified) if missing."""
        path = self._manifest_path(sha)
        try:
            return ChunkManifest.from_json(path.read_bytes(), expect_sha=sha)
        except FileNotFoundError:
            pass
        except ValueError:
            unlink(path)  # damaged: rebuild it from the object
        hasher = ChunkHasher(self.chunk_size)
        try:
            with open(self.path(sha), "rb") as f:
                for block in iter(lambda: f.read(_BLOCK), b""):
                    hasher.update(block)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {sha} in the store at {self.root}") from None
        manifest = hasher.finish()
        if manifest.sha256 != sha:
            raise IntegrityError(
                f"object {sha} in {self.root} is corrupt (its bytes hash to {manifest.sha256}); "
                "remove it and fetch it again"
            )
        self._write_manifest(manifest)
        return manifest

    # -- partial objects ----------------------------------------------------------------------

    def open_partial(self, sha: str, size: int) -> Partial:
        """Open (creating or resuming) ``partial/<sha>`` at full size, locked for this caller.

        Raises PartialBusyError when another transfer of the same object holds it, and
        DiskFullError (the partial removed) when the filesystem cannot hold ``size`` bytes.
        """
        path = self.partial_path(sha)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PartialBusyError(f"another transfer of {sha} is in progress") from None
            st = os.fstat(fd)
            try:
                same = os.stat(path).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if not same:  # committed or discarded while we waited for the lock
                raise PartialBusyError(f"partial file of {sha} was replaced; open it again")
            existed = st.st_size == size and st.st_blocks > 0
            if st.st_size != size:
                os.ftruncate(fd, 0)
            if size:
                allocate(fd, size)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, PartialBusyError):
                raise
            self.discard_partial(sha)
            if exc.errno in DISK_FULL:
                raise self.disk_full(f"making room for object {sha}", size) from exc
            raise
        return Partial(self, sha, size, fd, existed)

    def discard_partial(self, sha: str) -> None:
        """Remove ``partial/<sha>`` and its sidecars (``partial/<sha>.*``)."""
        unlink(self.partial_path(sha))
        self._remove_sidecars(sha)

    def _remove_sidecars(self, sha: str) -> None:
        for sidecar in self.partial_dir.glob(f"{validate_sha(sha)}.*"):
            unlink(sidecar)

    def commit_partial(
        self, sha: str, manifest: ChunkManifest | None = None, *, hashed: bool = False
    ) -> ObjectInfo:
        """Hash the whole partial file; move it into ``objects/`` if it is ``sha``.

        On a mismatch the partial is deleted and IntegrityError raised: its bytes are wrong
        somewhere the per-chunk checks could not see, so none of them can be trusted.
        """
        path = self.partial_path(sha)
        # The peer's chunk manifest (every chunk was verified against it as it landed) is kept
        # when this store chunks the same way; ``hashed`` says the caller also hashed the whole
        # file in order and found ``sha``, so the bytes need not be read again.
        same_chunking = manifest is not None and manifest.chunk_size == self.chunk_size
        known = manifest if same_chunking else None
        try:
            with open(path, "rb") as f:
                if known is not None and hashed:
                    result = known
                elif known is not None:
                    whole = hashlib.sha256()
                    for block in iter(lambda: f.read(_BLOCK), b""):
                        whole.update(block)
                    digest = whole.hexdigest()
                    result = (
                        known
                        if digest == sha
                        else ChunkManifest(digest, known.size, known.chunk_size, ())
                    )
                else:
                    chunked = ChunkHasher(self.chunk_size)
                    for block in iter(lambda: f.read(_BLOCK), b""):
                        chunked.update(block)
                    result = chunked.finish()
                os.fsync(f.fileno())
        except FileNotFoundError:
            raise FileNotFoundError(f"no transfer of {sha} in progress in {self.root}") from None
        manifest = result
        if manifest.sha256 != sha:
            self.discard_partial(sha)
            raise IntegrityError(
                f"received bytes hash to {manifest.sha256}, not {sha} ({manifest.size} bytes): "
                "the transfer was discarded; the source copy may be corrupt"
            )
        try:
            self._install(path, manifest)
        except DiskFullError:
            self.discard_partial(sha)
            raise
        self._remove_sidecars(sha)
        return ObjectInfo(sha, manifest.size)

    # -- removal and status -------------------------------------------------------------------

    def remove(self, sha: str) -> bool:
        """Delete an object and its chunk manifest; False when it was not here."""
        path = self.path(sha)
        unlink(self._manifest_path(sha))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def verify(self, sha: str) -> bool:
        """Hash the whole stored object again (a block at a time): is it still ``sha``?

        FileNotFoundError when it is not here. Slow for a big object: call it in a thread.
        """
        whole = hashlib.sha256()
        try:
            with open(self.path(sha), "rb") as f:
                for block in iter(lambda: f.read(_BLOCK), b""):
                    whole.update(block)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {sha} in the store at {self.root}") from None
        return whole.hexdigest() == sha

    def quarantine(self, sha: str) -> Path | None:
        """Move a (corrupt) object and its chunk manifest out of ``objects/`` into
        ``quarantine/<UTC stamp>-<sha>``, for an operator to inspect; the store no longer
        ``has()`` it, so peers stop being served its bytes and a producer re-running puts a
        good copy in its place. Returns the new path, or None when the object was not here.
        """
        source = self.path(sha)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.quarantine_dir / f"{stamp}-{sha}"
        self.quarantine_dir.mkdir(exist_ok=True)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._manifest_path(sha), target.with_name(f"{target.name}.chunks"))
        fsync_dir(self.quarantine_dir)
        fsync_dir(source.parent)
        return target

    def status(self) -> StoreStatus:
        usage = shutil.disk_usage(self.root)
        objects = object_bytes = 0
        for entry in _scan(self.objects_dir, depth=2):
            if "." not in entry.name and entry.is_file(follow_symlinks=False):
                objects += 1
                object_bytes += entry.stat(follow_symlinks=False).st_size
        partials = sum(1 for e in _scan(self.partial_dir, depth=1) if "." not in e.name)
        return StoreStatus(
            root=str(self.root),
            disk_total=usage.total,
            disk_used=usage.used,
            disk_free=usage.free,
            objects=objects,
            object_bytes=object_bytes,
            partials=partials,
            inputs=sum(1 for _ in _scan(self.root / "inputs", depth=2)),
            outputs=sum(1 for _ in _scan(self.root / "work", depth=2)),
            quarantined=sum(
                1 for e in _scan(self.quarantine_dir, depth=1) if not e.name.endswith(".chunks")
            ),
        )

    # -- directories --------------------------------------------------------------------------

    def put_dir(self, path: Path, *, link: bool = False) -> ObjectInfo:
        """Store every file under ``path`` and the directory's manifest (see ``dirs.put_dir``)."""
        return dirs.put_dir(self, path, link=link)

    def dir_manifest(self, sha: str) -> DirManifest:
        """The parsed, checked manifest of a stored directory."""
        return dirs.dir_manifest(self, sha)

    def materialize(self, sha: str, kind: Literal["file", "dir"], dest: Path) -> Path:
        """Build ``dest`` from the store (see ``dirs.materialize``)."""
        return dirs.materialize(self, sha, kind, dest)


def _scan(directory: Path, *, depth: int) -> Iterator[os.DirEntry[str]]:
    """Entries exactly ``depth`` levels below ``directory`` (none if it does not exist)."""
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if depth == 1:
            yield entry
        elif entry.is_dir(follow_symlinks=False):
            yield from _scan(Path(entry.path), depth=depth - 1)
