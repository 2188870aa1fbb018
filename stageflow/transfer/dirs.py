"""Directories in the store: a directory is a manifest object naming one object per file.

``put_dir`` stores every regular file and then the canonical manifest (docs/data-plane.md);
``materialize`` builds a file or a tree back out of the store with hard links (copies across
filesystems, and for executables, whose mode a shared read-only inode cannot carry). A tree is
assembled beside its destination and renamed into place, so nobody sees half of one. Entry
paths were checked when the manifest was parsed (relative, no ``..``), so a manifest from a
peer cannot write outside ``dest``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stageflow.transfer._fs import DISK_FULL, NO_LINK, unlink
from stageflow.transfer.manifest import DirEntry, DirManifest

if TYPE_CHECKING:
    from stageflow.transfer.store import ContentStore, ObjectInfo

__all__ = ["dir_manifest", "materialize", "put_dir"]


def put_dir(store: ContentStore, path: Path, *, link: bool = False) -> ObjectInfo:
    """Store every file under ``path`` and its manifest; returns the manifest's address.

    The returned size is the sum of the files (what a ``kind: dir`` ref reports). Empty
    directories are not recorded; symbolic links and special files are refused, since a
    link's target may not exist on the machine that receives the directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    entries = []
    for file, rel in _walk_files(root):
        info = store.put_file(file, link=link)
        mode = os.stat(file).st_mode & 0o777
        entries.append(DirEntry(path=rel, sha256=info.sha256, size=info.size, mode=mode))
    manifest = DirManifest(tuple(sorted(entries, key=lambda e: e.path)))
    stored = store.put_bytes(manifest.to_json())
    return dataclasses.replace(stored, size=manifest.size)


def dir_manifest(store: ContentStore, sha: str) -> DirManifest:
    """Parse a stored manifest; ValueError if the object is not one (or names unsafe paths)."""
    try:
        data = store.path(sha).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no directory manifest {sha} in {store.root}") from None
    return DirManifest.from_json(data)


def materialize(store: ContentStore, sha: str, kind: Literal["file", "dir"], dest: Path) -> Path:
    """Build ``dest`` from the store: a hard link (or copy across filesystems) for a file,
    a tree of them for a directory, assembled beside ``dest`` and renamed into place.

    Hard-linked files share the object's read-only inode; files whose manifest mode is
    executable are copied so they can carry their mode. ``dest`` must not exist (an empty
    directory is allowed for ``kind="dir"``).
    """
    dest = Path(dest)
    if kind == "file":
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            raise FileExistsError(f"{dest} already exists")
        _place(store, store.path(sha), dest, mode=None)
        return dest
    if kind != "dir":
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    manifest = dir_manifest(store, sha)
    missing = [e.path for e in manifest.entries if not store.has(e.sha256)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) of directory {sha} are not in {store.root} "
            f"(first: {missing[0]}): fetch the directory before materializing it"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.partial"
    staging.mkdir()
    try:
        for entry in manifest.entries:
            target = staging.joinpath(*entry.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            _place(store, store.path(entry.sha256), target, mode=entry.mode)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _place(store: ContentStore, src: Path, dest: Path, *, mode: int | None) -> None:
    if mode is None or not mode & 0o111:
        try:
            os.link(src, dest)
            return
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {src.name} in {store.root}") from None
        except OSError as exc:
            if exc.errno not in NO_LINK:
                raise
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode if mode is not None else 0o644)
        os.rename(tmp, dest)
    except OSError as exc:
        unlink(tmp)
        if exc.errno in DISK_FULL:
            raise store.disk_full(f"copying {src.name} to {dest}") from exc
        raise


def _walk_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Regular files under ``root`` as (path, relative posix path); refuse anything else."""
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink():
                raise ValueError(
                    f"{entry.path} is a symbolic link; directories are stored with regular "
                    "files only (replace it with the file it points to)"
                )
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path), rel
            else:
                raise ValueError(f"{entry.path} is not a regular file or directory")
