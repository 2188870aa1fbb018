"""Move a whole directory over SSH, verified file by file, committed as a whole.

``ssh_download``/``ssh_upload`` come here when the source is a directory. The tree lands in a
hidden temp dir beside the destination (``.<name>.partial-dir``), every file in it is sha256-
checked on both ends, and only then is the temp dir renamed into place, so no reader ever sees a
half-copied tree. A killed transfer leaves the temp dir behind; the next attempt keeps the files
already there (rsync: same size and mtime; SFTP: same size) and resumes a partial one as a
single file resumes (rsync's delta, SFTP's checked prefix). The hash check afterwards covers
every kept file too, so nothing stale survives: a file that does not hash like its source is
copied once more, and one that still does not raises ``IntegrityError``.

One login moves the bytes: a single rsync run for the whole tree (``--files-from`` with the
names listed here), or one SFTP session per file over the asyncssh connection that also lists
the tree and hashes it.

The remote listing is walked over SFTP without following links, and trusted for nothing: names
that are empty, ``.``/``..`` or hold ``/`` or NUL, symlinks (wherever they point) and special
files make the whole directory refused, so a hostile or odd remote cannot write outside the
destination. Local source trees get the same treatment (symlinks refused, not followed).

Replacing an existing destination directory is two renames (old one aside, new one in) and a
removal: readers see the old tree, then for an instant nothing, then the new tree; never a mix.
An existing non-directory at the destination is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.errors import DiskFullError, IntegrityError
from stageflow.transfer._fs import fsync_dir
from stageflow.transfer._ssh_hash import file_sha256
from stageflow.transfer._ssh_remote import RemoteHost, map_errors, permanent
from stageflow.transfer._ssh_rsync import rsync_copy
from stageflow.transfer._ssh_sftp import sftp_download, sftp_upload
from stageflow.transfer._ssh_target import Progress, SshOptions, SshUrl

__all__ = ["Tree", "check_name", "download_dir", "upload_dir"]

_MAX_ENTRIES = 1_000_000  # a bound on what a remote listing may make us hold in memory
_BATCH = 256  # paths per remote command


@dataclass
class Tree:
    """A directory's content: relative POSIX paths, parents listed before their children."""

    dirs: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # path -> size
    strays: list[str] = field(default_factory=list)  # symlinks and special files

    @property
    def total(self) -> int:
        return sum(self.files.values())


def check_name(name: str, where: str) -> None:
    """Refuse a listed name that could address anything outside the directory it is in."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise permanent(
            f"{where} lists the entry {name!r}, which could write outside the destination: "
            "refusing the directory"
        )


async def remote_tree(remote: RemoteHost, root: str, *, strict: bool) -> Tree:
    """Walk ``root`` over SFTP without following links.

    ``strict``: a symlink or special file refuses the whole tree (a source); otherwise it is
    returned in ``strays`` (our own temp dir, where it is removed).
    """
    tree = Tree()
    with map_errors(remote.url):
        async with remote.conn.start_sftp_client() as sftp:
            pending = [""]
            while pending:
                rel = pending.pop()
                for entry in await sftp.readdir(posixpath.join(root, rel) if rel else root):
                    name = str(entry.filename)
                    if name in (".", ".."):
                        continue
                    check_name(name, f"{remote.url.address}:{root}")
                    path = posixpath.join(rel, name) if rel else name
                    mode = entry.attrs.permissions or 0
                    if stat.S_ISDIR(mode):
                        tree.dirs.append(path)
                        pending.append(path)
                    elif stat.S_ISREG(mode):
                        tree.files[path] = entry.attrs.size or 0
                    elif strict:
                        what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                        raise permanent(
                            f"{remote.url.address}:{root}/{path} is {what}: links are not "
                            "followed and special files not copied; remove it or replace it "
                            "with the file itself"
                        )
                    else:
                        tree.strays.append(path)
                    if len(tree.dirs) + len(tree.files) > _MAX_ENTRIES:
                        raise permanent(f"{remote.url.address}:{root} has over "
                                        f"{_MAX_ENTRIES} entries")  # fmt: skip
    tree.dirs.sort(key=lambda p: p.count("/"))
    return tree


def local_tree(root: Path, *, strict: bool) -> Tree:
    """``remote_tree`` for a local directory (``strict`` refuses symlinks with a ValueError)."""
    tree = Tree()
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    tree.dirs.append(path)
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    tree.files[path] = entry.stat(follow_symlinks=False).st_size
                elif strict:
                    raise ValueError(
                        f"{root / path} is a symlink or special file: only regular files and "
                        "directories are sent over SSH (links are not followed)"
                    )
                else:
                    tree.strays.append(path)
    tree.dirs.sort(key=lambda p: p.count("/"))
    return tree


# --- download ----------------------------------------------------------------------------------


async def download_dir(
    remote: RemoteHost,
    source: SshUrl,
    dest: Path,
    opts: SshOptions,
    *,
    method: str,
    progress: Progress | None,
) -> Path:
    """Copy the remote directory ``source`` to ``dest`` (created or replaced as a whole)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ValueError(f"{dest} exists and is not a directory: refusing to replace it")
    tree = await remote_tree(remote, source.path, strict=True)
    temp = dest.with_name(f".{dest.name}.partial-dir")
    with map_errors(source, opts):
        await asyncio.to_thread(_prepare_local, temp, tree)

    async def copy(files: list[str]) -> None:
        size = sum(tree.files[f] for f in files)
        base = tree.total - size
        if method == "rsync" and files:
            with _file_list(files) as listing:
                await rsync_copy(
                    source.rsync_spec + "/", f"{temp}/",
                    url=source, opts=opts, total=size,
                    progress=_shifted(progress, base, tree.total),
                    extra=(f"--files-from={listing}", "--from0"),
                )  # fmt: skip
            if progress is not None:  # rsync does not count the files it found complete
                progress(tree.total, tree.total)
            return
        done = base
        for rel in files:
            local, size = temp / rel, tree.files[rel]
            if not (local.exists() and local.stat().st_size == size):  # else: the hash decides
                await sftp_download(
                    remote, posixpath.join(source.path, rel), local, size,
                    rate=opts.bandwidth_limit, progress=_shifted(progress, done, tree.total),
                )  # fmt: skip
            done += size
            if progress is not None:
                progress(done, tree.total)

    async def mismatched(files: list[str]) -> list[str]:
        theirs, ours = await asyncio.gather(
            remote.sha256_many([posixpath.join(source.path, f) for f in files]),
            asyncio.to_thread(lambda: [file_sha256(temp / f) for f in files]),
        )
        return [f for f, a, b in zip(files, theirs, ours, strict=True) if a != b]

    def discard(files: list[str]) -> None:
        for rel in files:
            (temp / rel).unlink(missing_ok=True)

    async def discard_async(files: list[str]) -> None:
        await asyncio.to_thread(discard, files)

    try:
        await _copy_and_verify(sorted(tree.files), copy, mismatched, discard_async, str(source))
    except DiskFullError:
        await asyncio.to_thread(shutil.rmtree, temp, True)
        raise
    with map_errors(source, opts):
        await asyncio.to_thread(_commit_local_dir, temp, dest, tree)
    return dest


def _prepare_local(temp: Path, tree: Tree) -> None:
    """Make ``temp`` hold ``tree``'s directories and nothing it does not list (kept files stay)."""
    if temp.is_symlink() or (temp.exists() and not temp.is_dir()):
        temp.unlink()
    temp.mkdir(parents=True, exist_ok=True)
    have = local_tree(temp, strict=False)
    wanted_dirs = set(tree.dirs)
    for path in have.strays + [f for f in have.files if f not in tree.files]:
        (temp / path).unlink(missing_ok=True)
    for path in have.dirs:
        if path not in wanted_dirs and (temp / path).exists():
            shutil.rmtree(temp / path)
    for path in tree.dirs:
        if (temp / path).is_file():
            (temp / path).unlink()
        (temp / path).mkdir(exist_ok=True)
    for path in tree.files:
        if (temp / path).is_dir():
            shutil.rmtree(temp / path)


def _commit_local_dir(temp: Path, dest: Path, tree: Tree) -> None:
    """Flush every file, then rename ``temp`` into place (an old ``dest`` moved aside first)."""
    for rel in tree.files:
        fd = os.open(temp / rel, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    old = dest.with_name(f".{dest.name}.old-dir")
    if old.exists():
        shutil.rmtree(old)
    if dest.is_dir():
        os.rename(dest, old)
    os.rename(temp, dest)
    fsync_dir(dest.parent)
    if old.exists():
        shutil.rmtree(old)


# --- upload ------------------------------------------------------------------------------------

# Put the verified temp dir $2 in place at $1, moving an existing directory there aside to $3
# first and removing it afterwards; refuse to replace anything that is not a directory.
_COMMIT_DIR_SH = """
t=$1 p=$2 old=$3
if [ -L "$t" ] || { [ -e "$t" ] && [ ! -d "$t" ]; }; then
  echo "$t exists and is not a directory: refusing to replace it" >&2; exit 5
fi
sync -f -- "$p" 2>/dev/null
if [ -d "$t" ]; then rm -rf -- "$old" && mv -- "$t" "$old" || exit 6; fi
mv -- "$p" "$t" || exit 7
rm -rf -- "$old"
"""


async def upload_dir(
    remote: RemoteHost,
    src: Path,
    target: SshUrl,
    opts: SshOptions,
    *,
    method: str,
    progress: Progress | None,
) -> None:
    """Copy the local directory ``src`` to the remote ``target`` (created or replaced whole)."""
    tree = await asyncio.to_thread(local_tree, src, strict=True)
    there = await remote.stat(target.path)
    if there.kind in ("file", "other"):
        raise permanent(f"{target} exists and is not a directory: refusing to replace it")
    folder, name = posixpath.split(target.path)
    temp = posixpath.join(folder, f".{name}.partial-dir")
    kept = await _prepare_remote(remote, temp, tree)

    async def copy(files: list[str]) -> None:
        size = sum(tree.files[f] for f in files)
        base = tree.total - size
        if method == "rsync" and files:
            spec = SshUrl(user=target.user, host=target.host, port=target.port, path=temp)
            with _file_list(files) as listing:
                await rsync_copy(
                    f"{src.absolute()}/", spec.rsync_spec + "/",
                    url=target, opts=opts, total=size,
                    progress=_shifted(progress, base, tree.total),
                    extra=(f"--files-from={listing}", "--from0"),
                )  # fmt: skip
            if progress is not None:  # rsync does not count the files it found complete
                progress(tree.total, tree.total)
            return
        done = base
        for rel in files:
            if kept.get(rel) != tree.files[rel]:  # same size: the hash decides
                await sftp_upload(
                    remote, src / rel, posixpath.join(temp, rel),
                    rate=opts.bandwidth_limit,
                    progress=_shifted(progress, done, tree.total),
                )  # fmt: skip
            done += tree.files[rel]
            if progress is not None:
                progress(done, tree.total)

    async def mismatched(files: list[str]) -> list[str]:
        theirs, ours = await asyncio.gather(
            remote.sha256_many([posixpath.join(temp, f) for f in files]),
            asyncio.to_thread(lambda: [file_sha256(src / f) for f in files]),
        )
        return [f for f, a, b in zip(files, theirs, ours, strict=True) if a != b]

    async def discard(files: list[str]) -> None:
        for rel in files:
            kept.pop(rel, None)
        await _remove_remote(remote, [posixpath.join(temp, f) for f in files])

    try:
        await _copy_and_verify(sorted(tree.files), copy, mismatched, discard, str(src))
    except DiskFullError:
        await _remove_remote(remote, [temp])
        raise
    old = posixpath.join(folder, f".{name}.old-dir")
    await remote.run_script(_COMMIT_DIR_SH, target.path, temp, old)


async def _prepare_remote(remote: RemoteHost, temp: str, tree: Tree) -> dict[str, int]:
    """Make the remote ``temp`` hold ``tree``'s dirs and nothing else; return the kept files."""
    there = await remote.stat(temp)
    if there.kind in ("file", "other"):
        await _remove_remote(remote, [temp])
    have = await remote_tree(remote, temp, strict=False) if there.kind == "dir" else Tree()
    wanted_dirs = set(tree.dirs)
    extra = have.strays + [f for f in have.files if f not in tree.files]
    extra += [d for d in have.dirs if d not in wanted_dirs]
    extra += [d for d in tree.dirs if d in have.files] + [f for f in tree.files if f in have.dirs]
    await _remove_remote(remote, [posixpath.join(temp, p) for p in extra])
    dirs = [temp, *(posixpath.join(temp, d) for d in tree.dirs)]
    for start in range(0, len(dirs), _BATCH):
        await remote.run_script('mkdir -p -- "$@"', *dirs[start : start + _BATCH])
    return {f: size for f, size in have.files.items() if f in tree.files}


async def _remove_remote(remote: RemoteHost, paths: list[str]) -> None:
    for start in range(0, len(paths), _BATCH):
        await remote.run_script('rm -rf -- "$@"', *paths[start : start + _BATCH])


# --- shared ------------------------------------------------------------------------------------


async def _copy_and_verify(
    files: list[str],
    copy: Callable[[list[str]], Awaitable[None]],
    mismatched: Callable[[list[str]], Awaitable[list[str]]],
    discard: Callable[[list[str]], Awaitable[None]],
    what: str,
) -> None:
    """Copy, hash both ends; copy what differs once more (a stale kept file); then give up."""
    await copy(files)
    bad = await mismatched(files)
    if bad:
        await discard(bad)
        await copy(bad)
        bad = await mismatched(bad)
    if bad:
        await discard(bad)
        raise IntegrityError(
            f"{what}: {len(bad)} file(s) arrived hashing unlike their source, twice "
            f"(first: {bad[0]!r}); the source is probably being written. Nothing was put in "
            "place; retry once it is stable."
        )


def _shifted(progress: Progress | None, base: int, total: int) -> Progress | None:
    """A per-file progress callback reported as bytes of the whole directory."""
    if progress is None:
        return None
    report = progress
    return lambda done, _size: report(base + done, total)


@contextlib.contextmanager
def _file_list(files: list[str]) -> Iterator[str]:
    """A NUL-separated list of ``files`` for rsync's ``--files-from``, removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="stageflow-rsync-files-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0".join(name.encode() for name in files) + b"\0")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
