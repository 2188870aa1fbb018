"""Where an SSH transfer goes (``SshUrl``) and how it connects (``SshOptions``).

Both are plain frozen values so that the rsync path (OpenSSH's ``ssh`` binary) and the SFTP
path (asyncssh) are configured from the same place and connect the same way: neither reads
``~/.ssh/config``, because a transfer that silently behaved differently depending on which of the
two tools the remote happened to allow would be impossible to debug.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["Progress", "SshOptions", "SshUrl"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: bytes of the file now in place at the destination (a resumed
transfer starts where it left off, not at 0) and the file's size."""

# A host name or IPv4 address. A leading "-" would be read by ssh as an option
# (the ProxyCommand injection class of bugs), so it is refused here, not escaped later.
_HOST = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")


@dataclass(frozen=True, kw_only=True)
class SshUrl:
    """``ssh://[user@]host[:port]/absolute/path`` to a regular file or a directory on a remote host.

    ``user`` defaults to the local user and ``port`` to 22, as with ``ssh`` itself. Only absolute
    paths are accepted: ``~`` is not expanded, since rsync and SFTP would disagree about it.
    """

    user: str
    host: str
    port: int = 22
    path: str

    @classmethod
    def parse(cls, url: str) -> SshUrl:
        """Parse ``url`` or raise ``ValueError`` saying what is wrong and what is expected."""
        expected = "expected ssh://user@host:port/absolute/path"
        if not isinstance(url, str) or not url:
            raise ValueError(f"empty SSH URL: {expected}")
        if any(ch in url for ch in "\x00\r\n"):
            raise ValueError(f"SSH URL {url!r} contains a control character")
        parts = urlsplit(url)
        if parts.scheme != "ssh":
            raise ValueError(f"{url!r} is not an SSH URL: {expected}")
        if parts.password is not None:
            raise ValueError(
                f"{url!r} carries a password: stageflow authenticates over SSH with keys only "
                "(set SshOptions.identity_file)"
            )
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise ValueError(
                f"{url!r} has a query or fragment: percent-encode '?' and '#' in the path "
                "(%3F, %23)"
            )
        host = parts.hostname or ""
        if not host:
            raise ValueError(f"{url!r} names no host: {expected}")
        if ":" not in host and not _HOST.match(host):  # IPv6 literals arrive unbracketed
            raise ValueError(f"{url!r}: {host!r} is not a valid host name")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError(f"{url!r}: the port must be a number from 1 to 65535")
        user = unquote(parts.username) if parts.username is not None else getpass.getuser()
        if not _USER.match(user):
            raise ValueError(f"{url!r}: {user!r} is not a valid user name")
        path = unquote(parts.path)
        if not path or path == "/":
            raise ValueError(f"{url!r} names no file: {expected}")
        if path.endswith("/"):
            raise ValueError(
                f"{url!r} ends with '/': name directories like files, without it (a "
                "trailing '/' means different things to rsync and SFTP)"
            )
        if path.startswith("/~"):
            raise ValueError(
                f"{url!r}: home-relative paths are not supported, give the absolute path"
            )
        if any(ch in path for ch in "\x00\r\n"):
            raise ValueError(f"{url!r}: the path contains a control character")
        return cls(user=user, host=host, port=port or 22, path=path)

    @property
    def address(self) -> str:
        """``user@host:port``, for messages."""
        return f"{self.user}@{self._bracketed_host}:{self.port}"

    @property
    def rsync_spec(self) -> str:
        """The ``user@host:path`` operand rsync takes (the port travels in ``-e``)."""
        return f"{self.user}@{self._bracketed_host}:{self.path}"

    @property
    def _bracketed_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"ssh://{self.address}{self.path}"


@dataclass(frozen=True, kw_only=True)
class SshOptions:
    """How to authenticate and how fast to go. Secure by default: unknown hosts are refused."""

    identity_file: Path | None = None
    """Private key to log in with. ``None``: ssh's default keys and the ssh-agent."""

    known_hosts: Path | None = None
    """The one known_hosts file trusted for host keys. ``None``: ``~/.ssh/known_hosts``.
    ``/etc/ssh/ssh_known_hosts`` is not consulted; point this at it if your keys live there."""

    strict_host_key_checking: bool = True
    """``True``: a host missing from ``known_hosts`` is refused. ``False``: trust on first use
    (OpenSSH's ``accept-new``): its key is recorded, and a *changed* key is still refused."""

    connect_timeout: float = 10.0
    """Seconds to connect, exchange keys and log in."""

    io_timeout: float = 60.0
    """Seconds without any sign of life from the peer before the transfer is declared dead."""

    bandwidth_limit: int | None = None
    """Bytes per second, or ``None`` for as fast as the link goes. rsync rounds it to KiB/s."""

    def __post_init__(self) -> None:
        for name in ("identity_file", "known_hosts"):  # "~/.ssh/..." works as it does in ssh
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser())
        if self.connect_timeout <= 0 or self.io_timeout <= 0:
            raise ValueError("SshOptions timeouts must be positive")
        if self.bandwidth_limit is not None and self.bandwidth_limit <= 0:
            raise ValueError("SshOptions.bandwidth_limit must be a positive number of bytes/s")

    @property
    def known_hosts_path(self) -> Path:
        """The known_hosts file in effect."""
        return self.known_hosts or Path("~/.ssh/known_hosts").expanduser()
