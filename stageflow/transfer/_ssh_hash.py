"""sha256 of a local file (or of its first N bytes, or while it is written), in constant memory.

Called through ``asyncio.to_thread``: hashlib releases the GIL on large blocks, so hashing a big
file does not stall the event loop (and the heartbeats it sends).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

__all__ = ["LiveHasher", "file_sha256"]

_BLOCK = 1 << 20


def file_sha256(path: Path, limit: int | None = None) -> str:
    """Hex sha256 of ``path``'s content, or of its first ``limit`` bytes."""
    digest = hashlib.sha256()
    left = -1 if limit is None else limit
    with path.open("rb") as f:
        while left:
            block = f.read(_BLOCK if left < 0 else min(left, _BLOCK))
            if not block:
                break
            digest.update(block)
            if left > 0:
                left -= len(block)
    return digest.hexdigest()


class LiveHasher:
    """sha256 of a file hashed *while* another process writes it, so no pass is left after it.

    Only for a writer that fills a fresh file once, front to back (rsync ``--inplace`` into a
    new temp file, SFTP from offset 0): a thread follows the file's end, reading only bytes
    already written (Linux updates the size after the data is in the page cache). A resumed
    copy rewrites blocks in place, so callers hash it afterwards instead. ``finish`` hands back
    ``None`` (hash it afterwards) when anything is off: the file was never created, replaced,
    or does not end where expected. A wrong digest can only make the check fail, never pass:
    it is compared with the source's.
    """

    _POLL_S = 0.005

    def __init__(self, path: Path) -> None:
        self._path = path
        self._digest = hashlib.sha256()
        self._done = threading.Event()
        self._read = 0
        self._inode: int | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._follow, name="sha256-follow", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            while not self._path.exists():
                if self._done.wait(self._POLL_S):
                    if not self._path.exists():
                        return
                    break
            fd = os.open(self._path, os.O_RDONLY)
            try:
                self._inode = os.fstat(fd).st_ino
                while True:
                    block = os.pread(fd, _BLOCK, self._read)
                    if block:
                        self._digest.update(block)
                        self._read += len(block)
                    elif self._done.is_set():  # the writer has exited: this was the end
                        if not os.pread(fd, 1, self._read):
                            return
                    else:
                        time.sleep(self._POLL_S)
            finally:
                os.close(fd)
        except OSError:
            self._failed = True

    def finish(self, size: int) -> str | None:
        """Call once the writer has exited: the digest of ``size`` bytes, or ``None``."""
        self._done.set()
        self._thread.join()
        try:
            same_file = self._inode is not None and os.stat(self._path).st_ino == self._inode
        except OSError:
            return None
        if self._failed or not same_file or self._read != size:
            return None
        return self._digest.hexdigest()

    def stop(self) -> None:
        """Give up (the copy failed): end the thread."""
        self._done.set()
        self._thread.join()
