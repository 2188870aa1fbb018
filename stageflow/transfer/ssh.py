"""Move a file or directory to or from a host that runs nothing of ours, over SSH.

See docs/data-plane.md.

::

    opts = SshOptions(identity_file=Path("~/.ssh/etl_ed25519").expanduser())
    await ssh_download("ssh://etl@data1:22/exports/day.parquet", Path("in/day.parquet"), opts)
    await ssh_upload(Path("out/model.bin"), "ssh://etl@data1/models/model.bin", opts)

How a transfer goes, and why:

- One asyncssh connection logs in first (key auth only; host key checked against known_hosts,
  strictly by default). Credentials fail here, early, as a non-retryable ``AuthError`` naming
  the host, the key and the known_hosts file.
- The bytes move with **rsync** over OpenSSH when both ends have rsync (probed once per host),
  because it is the fastest thing available and resumes by itself; otherwise with **SFTP**,
  which every sshd offers. Both are configured from the same ``SshOptions``.
- Bytes land in ``.<name>.partial`` beside the destination. A killed transfer leaves it there,
  and the next attempt continues from it (rsync: delta against it; SFTP: append after checking
  that its prefix still matches the source).
- Afterwards sha256 is computed on both ends (remote: python3, else sha256sum). A mismatch
  removes the temp file and raises ``IntegrityError``; a match is renamed into place, atomically,
  so no reader ever sees half a file.

Directories go the same way, file by file, into a hidden ``.<name>.partial-dir`` that is renamed
into place once every file is verified (``_ssh_dirs``); symlinks and special files are refused,
never followed. Network trouble is a retryable ``TransferError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import posixpath
import shutil
from pathlib import Path
from typing import Literal

from stageflow.errors import DiskFullError, IntegrityError
from stageflow.transfer._fs import fsync_dir
from stageflow.transfer._ssh_dirs import download_dir, upload_dir
from stageflow.transfer._ssh_hash import LiveHasher, file_sha256
from stageflow.transfer._ssh_remote import RemoteHost, connect, map_errors, permanent
from stageflow.transfer._ssh_rsync import rsync_copy
from stageflow.transfer._ssh_sftp import sftp_download, sftp_upload
from stageflow.transfer._ssh_target import Progress, SshOptions, SshUrl

__all__ = ["Progress", "SshOptions", "SshUrl", "ssh_download", "ssh_upload"]

log = logging.getLogger("stageflow.transfer.ssh")

Method = Literal["rsync", "sftp"]


async def ssh_download(
    url: str | SshUrl,
    dest: Path,
    opts: SshOptions | None = None,
    *,
    progress: Progress | None = None,
) -> Path:
    """Copy the remote file or directory at ``url`` to the local path ``dest``; return ``dest``.

    A directory arrives whole or not at all: see ``_ssh_dirs`` (an existing directory at
    ``dest`` is replaced, an existing file refused).

    Raises ``AuthError`` (key or host key refused), ``IntegrityError`` (the copy does not hash
    like the source: nothing is left at ``dest`` nor in the temp file), ``DiskFullError``, or
    ``TransferError`` (network trouble: retry, the next attempt resumes).
    """
    source = url if isinstance(url, SshUrl) else SshUrl.parse(url)
    opts = opts or SshOptions()
    dest = Path(dest).absolute()
    partial = dest.with_name(f".{dest.name}.partial")
    async with connect(source, opts) as remote:
        there = await remote.stat(source.path)
        if there.kind == "missing":
            raise permanent(f"{source}: no such file on {source.host}")
        if there.kind == "other":
            raise permanent(f"{source} is neither a regular file nor a directory")
        method = await _method(remote)
        log.info("download %s -> %s via %s", source, dest, method, extra={"ssh_method": method})
        if there.kind == "dir":
            return await download_dir(remote, source, dest, opts, method=method,
                                      progress=progress)  # fmt: skip
        if dest.is_dir():
            raise ValueError(f"{dest} is a directory: give the path of the file to write")
        with map_errors(source, opts):
            dest.parent.mkdir(parents=True, exist_ok=True)
        # With rsync, both hashes run during the copy rather than after it (benchmarks/
        # transfer.py): the source's when its version (inode, mtime, ctime) is known, because a
        # version that moves during the copy tells that the source changed; ours by following a
        # fresh temp file as it is written (a resumed one is hashed afterwards). Not with SFTP:
        # this process then spends a core on the copy itself, and hashing beside it slows it.
        early = method == "rsync" and there.version is not None
        theirs = asyncio.ensure_future(remote.sha256(source.path)) if early else None
        live = LiveHasher(partial) if method == "rsync" and not partial.exists() else None
        try:
            if method == "rsync":
                await rsync_copy(
                    source.rsync_spec, str(partial),
                    url=source, opts=opts, total=there.size, progress=progress,
                )  # fmt: skip
            else:
                await sftp_download(
                    remote, source.path, partial, there.size,
                    rate=opts.bandwidth_limit, progress=progress,
                )  # fmt: skip
        except BaseException as exc:
            await _abandon(theirs, live)
            if isinstance(exc, DiskFullError):
                partial.unlink(missing_ok=True)
            raise
        expected, got = await asyncio.gather(
            theirs or remote.sha256(source.path), _local_digest(live, partial, there.size)
        )
        if got == expected and early:
            now = await remote.stat(source.path)
            if (now.size, now.version) != (there.size, there.version):
                partial.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{source} changed during the transfer (its size, mtime or ctime moved), so "
                    f"the copy cannot be checked against the sha256 of one version of it. "
                    f"Nothing was written to {dest}; retry once the source is stable."
                )
        if got != expected:
            partial.unlink(missing_ok=True)
            raise IntegrityError(
                f"{source} arrived with sha256 {got} but the source now hashes to {expected}; "
                f"it probably changed during the transfer. Nothing was written to {dest}."
            )
        with map_errors(source, opts):
            await asyncio.to_thread(_commit_local, partial, dest)
    return dest


async def ssh_upload(
    src: Path,
    url: str | SshUrl,
    opts: SshOptions | None = None,
    *,
    progress: Progress | None = None,
) -> None:
    """Copy the local file or directory ``src`` to the remote path ``url``, creating its parent.

    A directory is committed whole, replacing a directory already there (see ``_ssh_dirs``).

    Raises as ``ssh_download`` does; on ``IntegrityError`` nothing is left at the remote path
    nor in the remote temp file.
    """
    target = url if isinstance(url, SshUrl) else SshUrl.parse(url)
    opts = opts or SshOptions()
    src = Path(src)
    if src.is_symlink() or not (src.is_file() or src.is_dir()):
        raise ValueError(f"{src} is not a regular file or directory: nothing to send over SSH")
    folder, name = posixpath.split(target.path)
    partial = posixpath.join(folder, f".{name}.partial")
    async with connect(target, opts) as remote:
        if src.is_dir():
            method = await _method(remote)
            log.info("upload %s -> %s via %s", src, target, method, extra={"ssh_method": method})
            await upload_dir(remote, src, target, opts, method=method, progress=progress)
            return
        there = await remote.stat(target.path)
        if there.kind in ("dir", "other"):
            raise permanent(f"{target} exists and is not a regular file: refusing to replace it")
        await remote.mkdir_p(folder)
        method = await _method(remote)
        log.info("upload %s -> %s via %s", src, target, method, extra={"ssh_method": method})
        size = src.stat().st_size
        try:
            if method == "rsync":
                partial_spec = dataclasses.replace(target, path=partial).rsync_spec
                await rsync_copy(
                    str(src.absolute()), partial_spec,
                    url=target, opts=opts, total=size, progress=progress,
                )  # fmt: skip
            else:
                await sftp_upload(
                    remote, src, partial, rate=opts.bandwidth_limit, progress=progress
                )
        except DiskFullError:
            await remote.remove(partial)
            raise
        expected, got = await asyncio.gather(
            asyncio.to_thread(file_sha256, src), remote.sha256(partial)
        )
        if got != expected:
            await remote.remove(partial)
            raise IntegrityError(
                f"{src} arrived at {target.address} with sha256 {got} but hashes to "
                f"{expected} here; it probably changed during the transfer. Nothing was "
                f"written to {target.path}."
            )
        await remote.commit(partial, target.path)


async def _method(remote: RemoteHost) -> Method:
    """rsync when this machine has rsync and ssh and the remote has rsync, else SFTP."""
    local = shutil.which("rsync") is not None and shutil.which("ssh") is not None
    return "rsync" if local and await remote.has_rsync() else "sftp"


async def _local_digest(live: LiveHasher | None, path: Path, size: int) -> str:
    """The digest ``live`` took during the copy, or (none, or unusable) a pass over ``path``."""
    digest = await asyncio.to_thread(live.finish, size) if live else None
    if digest is None:
        digest = await asyncio.to_thread(file_sha256, path)
    return digest


async def _abandon(theirs: asyncio.Future[str] | None, live: LiveHasher | None) -> None:
    """Stop the hashes started beside a copy that failed."""
    if theirs is not None:
        theirs.cancel()
        with contextlib.suppress(BaseException):
            await theirs
    if live is not None:
        await asyncio.to_thread(live.stop)


def _commit_local(partial: Path, dest: Path) -> None:
    """Flush the verified temp file, rename it over ``dest``, fsync the directory entry.

    ``fdatasync``, not ``fsync``: the data and the size it needs are flushed, timestamps are not
    waited for.
    """
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(partial, dest)
    fsync_dir(dest.parent)
