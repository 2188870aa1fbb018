"""Small filesystem rules shared by the store's modules: which errors mean what, and how to
make a write durable. Kept in one place so "disk full" is recognised the same way everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

__all__ = ["DISK_FULL", "NO_LINK", "allocate", "fsync_dir", "unlink"]

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""errnos that mean the filesystem (or the user's quota) has no room."""
NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)
"""errnos after which a hard link is replaced by a copy (other filesystem, no permission)."""


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes now, so a full disk shows before a transfer, not during it."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)
