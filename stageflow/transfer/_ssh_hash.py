"""sha256 of a local file, or of its first N bytes, in constant memory.

Called through ``asyncio.to_thread``: hashlib releases the GIL on large blocks, so hashing a big
file does not stall the event loop (and the heartbeats it sends).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

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
