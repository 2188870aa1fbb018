"""Child processes that do not outlive us: a killed stageflow process takes its children along.

Used for the embedded Temporal server and for ``shell`` stages, so that neither a crashed CLI
leaves a server behind nor a killed worker leaves a command writing while a retry runs it again.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn``: ask Linux to SIGKILL this child when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
