"""One asyncssh connection to the remote host, and the few shell commands run over it.

Every transfer opens this connection first, whichever tool then moves the bytes: it is where
authentication and host-key failures surface (as ``AuthError``, with the host, key and
known_hosts file named), where the remote file is looked at, where rsync is probed for, and
where the remote sha256 is computed. asyncssh and OpenSSH errors are converted to stageflow's
errors here and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncssh

from stageflow.errors import AuthError, DiskFullError, StageflowError, TransferError
from stageflow.transfer._ssh_target import SshOptions, SshUrl

__all__ = [
    "RemoteFile",
    "RemoteHost",
    "connect",
    "host_key_error",
    "key_refused_error",
    "map_errors",
    "openssh_command",
    "permanent",
]

log = logging.getLogger("stageflow.transfer.ssh")

# Per (user, host, port): whether `command -v rsync` succeeded there. Probed once per process.
_RSYNC_ON_REMOTE: dict[tuple[str, str, int], bool] = {}

# sha256 of a remote file (or of its first N bytes). python3's hashlib is about five times
# faster than coreutils' sha256sum on machines with SHA-NI, so it is preferred; it is tried by
# running it, not by `command -v`, because a shim on PATH may exist and still not run. (A read
# error there falls through to sha256sum, which reports it.)
_HASH_PY = """
import hashlib, sys
path, n = sys.argv[1], int(sys.argv[2]) if sys.argv[2] else -1
h = hashlib.sha256()
with open(path, "rb") as f:
    while n:
        block = f.read(1 << 20 if n < 0 else min(n, 1 << 20))
        if not block:
            break
        h.update(block)
        n = n - len(block) if n > 0 else n
print(h.hexdigest())
"""
_HASH_SH = """
f=$1 n=$2
[ -r "$f" ] || { echo "cannot read $f" >&2; exit 3; }
if out=$(python3 -c "$3" "$f" "$n" 2>/dev/null); then echo "$out"; exit 0; fi
if command -v sha256sum >/dev/null 2>&1; then h='sha256sum'
elif command -v shasum >/dev/null 2>&1; then h='shasum -a 256'
else echo 'neither python3 nor sha256sum nor shasum on the remote PATH' >&2; exit 4; fi
if [ -n "$n" ]; then head -c "$n" -- "$f" | $h; else $h < "$f"; fi | cut -d' ' -f1
"""
# sha256 of each file named in argv, one hex digest a line, in order (a directory's files).
_HASH_MANY_PY = """
import hashlib, sys
for path in sys.argv[1:]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    print(h.hexdigest())
"""
_HASH_MANY_SH = """
py=$1; shift
if out=$(python3 -c "$py" "$@" 2>/dev/null); then echo "$out"; exit 0; fi
if command -v sha256sum >/dev/null 2>&1; then h='sha256sum'
elif command -v shasum >/dev/null 2>&1; then h='shasum -a 256'
else echo 'neither python3 nor sha256sum nor shasum on the remote PATH' >&2; exit 4; fi
for f; do
  [ -r "$f" ] || { echo "cannot read $f" >&2; exit 3; }
  $h < "$f" | cut -d' ' -f1
done
"""
_HASH_MANY_BATCH = 256  # paths per command: well under the kernel's argument size limit
# A regular file prints "SIZE VERSION": VERSION is inode, mtime and ctime (GNU, then BSD stat),
# or "-" where neither stat runs. ctime cannot be set back by the writer, as mtime can.
_STAT_SH = """
if [ -d "$1" ]; then echo dir
elif [ -f "$1" ]; then
  v=$(stat -c '%i:%.9Y:%.9Z' -- "$1" 2>/dev/null || stat -f '%i:%Fm:%Fc' -- "$1" 2>/dev/null)
  echo $(wc -c < "$1") "${v:--}"
elif [ -e "$1" ]; then echo other
else echo missing; fi
"""


def permanent(message: str) -> TransferError:
    """A ``TransferError`` that retrying cannot fix (a missing file, a directory, no access)."""
    error = TransferError(message)
    error.non_retryable = True
    return error


@dataclass(frozen=True)
class RemoteFile:
    """What is at a remote path: a regular file and its size, or why there is none."""

    kind: Literal["file", "dir", "missing", "other"]
    size: int = 0
    version: str | None = None
    """A file's inode, mtime and ctime: it changes when the file is written or replaced.
    ``None`` where the remote has no ``stat`` tool."""


class RemoteHost:
    """An authenticated connection plus the remote shell commands a transfer needs."""

    def __init__(self, conn: asyncssh.SSHClientConnection, url: SshUrl) -> None:
        self.conn = conn
        self.url = url

    async def run_script(self, script: str, *args: str) -> str:
        """Run ``script`` under ``sh`` with ``args`` as $1..., return stdout or raise."""
        command = shlex.join(["sh", "-c", script, "sh", *args])
        with map_errors(self.url):
            result = await self.conn.run(command, check=False)
        stderr = str(result.stderr or "").strip()
        if result.exit_status != 0:
            raise TransferError(
                f"{self.url.address}: remote command failed (exit {result.exit_status}): "
                f"{stderr or 'no message'}"
            )
        return str(result.stdout or "")

    async def stat(self, path: str) -> RemoteFile:
        out = _last_line(await self.run_script(_STAT_SH, path))
        if out in ("dir", "missing", "other"):
            return RemoteFile(kind=out)  # type: ignore[arg-type]
        size, _, version = out.partition(" ")
        if not size.isdigit():
            raise TransferError(f"{self.url.address}: unexpected answer to stat: {out[:80]!r}")
        return RemoteFile(kind="file", size=int(size), version=version.strip("- ") or None)

    async def sha256(self, path: str, limit: int | None = None) -> str:
        """Hex sha256 of ``path``, or of its first ``limit`` bytes."""
        digest = _last_line(
            await self.run_script(_HASH_SH, path, "" if limit is None else str(limit), _HASH_PY)
        )
        if len(digest) != 64:
            raise TransferError(f"{self.url.address}: unexpected hash output {digest[:80]!r}")
        return digest

    async def sha256_many(self, paths: list[str]) -> list[str]:
        """Hex sha256 of each of ``paths``, in order, in a few commands rather than one each."""
        digests: list[str] = []
        for start in range(0, len(paths), _HASH_MANY_BATCH):
            batch = paths[start : start + _HASH_MANY_BATCH]
            out = await self.run_script(_HASH_MANY_SH, _HASH_MANY_PY, *batch)
            lines = [line.strip() for line in out.strip().splitlines()][-len(batch) :]
            if len(lines) != len(batch) or any(len(d) != 64 for d in lines):
                raise TransferError(
                    f"{self.url.address}: unexpected hash output {out.strip()[-160:]!r}"
                )
            digests += lines
        return digests

    async def has_rsync(self) -> bool:
        """Whether rsync is on the remote login PATH; asked once per host and process."""
        key = (self.url.user, self.url.host, self.url.port)
        if key not in _RSYNC_ON_REMOTE:
            with map_errors(self.url):
                result = await self.conn.run("command -v rsync", check=False)
            _RSYNC_ON_REMOTE[key] = result.exit_status == 0
        return _RSYNC_ON_REMOTE[key]

    async def mkdir_p(self, path: str) -> None:
        await self.run_script('mkdir -p -- "$1"', path)

    async def commit(self, src: str, dst: str) -> None:
        """Flush ``src`` to disk, then ``rename(2)`` it over ``dst``: atomic for readers of ``dst``.

        ``sync FILE`` is best effort (old coreutils sync everything, busybox may refuse args).
        """
        await self.run_script('sync -- "$1" 2>/dev/null; mv -f -- "$1" "$2"', src, dst)

    async def remove(self, path: str) -> None:
        await self.run_script('rm -f -- "$1"', path)


def _last_line(out: str) -> str:
    """The command's answer: its last line (a chatty shell rc file may print before it)."""
    lines = out.strip().splitlines()
    return lines[-1].strip() if lines else ""


@contextlib.asynccontextmanager
async def connect(url: SshUrl, opts: SshOptions) -> AsyncIterator[RemoteHost]:
    """Log in to ``url``'s host with key auth and checked host keys; close on exit."""
    known_hosts = opts.known_hosts_path
    if opts.strict_host_key_checking and not known_hosts.is_file():
        raise AuthError(
            f"cannot check the host key of {url.address}: known_hosts file {known_hosts} does "
            f"not exist. Verify the server's fingerprint, then add it with "
            f"`ssh-keyscan -p {url.port} {url.host} >> {known_hosts}`"
        )
    if opts.identity_file is not None and not os.access(opts.identity_file, os.R_OK):
        raise AuthError(f"identity file {opts.identity_file} does not exist or is not readable")

    def trust_on_first_use() -> asyncssh.SSHClient:
        return _TrustOnFirstUse(known_hosts)

    identity = [str(opts.identity_file)] if opts.identity_file else ()
    with map_errors(url, opts):
        conn = await asyncssh.connect(
            url.host,
            url.port,
            username=url.user,
            config=[],  # see _ssh_target: every setting comes from SshOptions
            known_hosts=str(known_hosts) if known_hosts.is_file() else b"",
            # strict: asyncssh's default client, which accepts only keys in known_hosts
            client_factory=None if opts.strict_host_key_checking else trust_on_first_use,
            client_keys=identity,
            agent_path=None if opts.identity_file else (),
            preferred_auth="publickey",
            connect_timeout=opts.connect_timeout,
            keepalive_interval=opts.io_timeout / 3,
            keepalive_count_max=3,
        )
    try:
        yield RemoteHost(conn, url)
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()


class _TrustOnFirstUse(asyncssh.SSHClient):
    """``StrictHostKeyChecking=accept-new``: record an unknown host's key, refuse a changed one.

    asyncssh calls this only for a key that known_hosts does not already trust.
    """

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if _host_is_listed(self._known_hosts, host, addr, port):
            return False  # listed with another key: possibly a man in the middle
        self._known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pattern = host if port == 22 else f"[{host}]:{port}"
        line = f"{pattern} {key.export_public_key().decode().strip()}\n"
        fd = os.open(self._known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line)
        log.warning(
            "trusting %s's host key on first use; recorded in %s", pattern, self._known_hosts
        )
        return True


def _host_is_listed(known_hosts: Path, host: str, addr: str, port: int | None) -> bool:
    if not known_hosts.is_file():
        return False
    trusted, ca_keys, *_ = asyncssh.match_known_hosts(
        str(known_hosts), host, addr, port if port != 22 else None
    )
    return bool(trusted or ca_keys)


@contextlib.contextmanager
def map_errors(url: SshUrl, opts: SshOptions | None = None) -> Iterator[None]:
    """Convert asyncssh and OS errors into stageflow's, with what the user needs to act."""
    try:
        yield
    except StageflowError:
        raise
    except asyncssh.PermissionDenied as exc:
        raise key_refused_error(url, opts, exc.reason) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise host_key_error(url, opts, exc.reason) from None
    except asyncssh.KeyImportError as exc:
        key = opts.identity_file if opts else None
        raise AuthError(
            f"cannot use identity file {key} for {url.address}: {exc} (stageflow never asks "
            "for a passphrase: use an unencrypted deploy key readable only by this user)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left while transferring {url}: {exc}") from None
        raise TransferError(f"{url.address}: {type(exc).__name__}: {exc}") from exc
    except asyncssh.Error as exc:
        raise TransferError(f"{url.address}: {type(exc).__name__}: {exc.reason}") from exc


def key_refused_error(url: SshUrl, opts: SshOptions | None, reason: str) -> AuthError:
    """The server would not take our key: say which key, and where it must be listed."""
    key = opts.identity_file if opts and opts.identity_file else "ssh's default keys"
    return AuthError(
        f"{url.address} refused key authentication with {key} ({reason}): add the public key "
        f"to ~{url.user}/.ssh/authorized_keys there, or set SshOptions.identity_file to the "
        f"right key"
    )


def host_key_error(url: SshUrl, opts: SshOptions | None, reason: str) -> AuthError:
    """The server's host key is unknown or changed: say which file and how to fix it."""
    known_hosts = (opts or SshOptions()).known_hosts_path
    pattern = url.host if url.port == 22 else f"[{url.host}]:{url.port}"
    if _host_is_listed(known_hosts, url.host, url.host, url.port):
        return AuthError(
            f"the host key of {url.address} does NOT match the one recorded in {known_hosts} "
            f"({reason}). Someone may be intercepting the connection; if the host was "
            f"reinstalled, verify its new fingerprint and remove the old entry with "
            f"`ssh-keygen -R '{pattern}' -f {known_hosts}`"
        )
    return AuthError(
        f"the host key of {url.address} is not in {known_hosts} ({reason}). Verify the "
        f"server's fingerprint, then add it with "
        f"`ssh-keyscan -p {url.port} {url.host} >> {known_hosts}`"
    )


def openssh_command(url: SshUrl, opts: SshOptions) -> list[str]:
    """The ``ssh`` argv rsync runs (``-e``), configured exactly as the asyncssh connection."""
    checking = "yes" if opts.strict_host_key_checking else "accept-new"
    alive = max(1, math.ceil(opts.io_timeout / 3))
    command = [
        "ssh",
        "-F",
        "none",
        "-p",
        str(url.port),
        "-o", "BatchMode=yes",
        "-o", f"StrictHostKeyChecking={checking}",
        "-o", f"UserKnownHostsFile={opts.known_hosts_path}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"ConnectTimeout={max(1, math.ceil(opts.connect_timeout))}",
        "-o", f"ServerAliveInterval={alive}",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
        # AES-GCM first (AES-NI makes it about half the CPU of OpenSSH's default ChaCha20 here;
        # benchmarks/transfer.py); the rest of the default list stays as the fallback.
        "-o", "Ciphers=^aes128-gcm@openssh.com",
    ]  # fmt: skip
    if opts.identity_file is not None:
        command += ["-i", str(opts.identity_file), "-o", "IdentitiesOnly=yes"]
    return command
