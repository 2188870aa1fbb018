"""Directory-wide fixtures for tests/transfer: the real sshd servers of ``sshd.py``.

``sshd`` and ``sshd_no_rsync`` are available to every test here. Test modules may also import
the ``*_fixture`` functions from ``sshd`` themselves (test_ssh.py does), so that they do not
depend on what this file holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # helper modules import by name, under --import-mode=importlib too
    sys.path.insert(0, HERE)

from sshd import (  # noqa: E402
    sshd_fixture,
    sshd_no_rsync_fixture,
    sshd_no_rsync_session_server_fixture,
    sshd_session_server_fixture,
)

__all__ = [
    "sshd_fixture",
    "sshd_no_rsync_fixture",
    "sshd_no_rsync_session_server_fixture",
    "sshd_session_server_fixture",
]
