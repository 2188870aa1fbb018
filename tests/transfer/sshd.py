"""A real OpenSSH server for tests: generated ed25519 keys, a loopback port, stopped by its pid.

The server itself is ``stageflow.testing.sshd.start_sshd`` (shared with the multi-host harness,
stageflow/testing/hosts.py); this module holds its pytest fixtures. Its ``*_fixture`` functions
are the pytest fixtures ``sshd`` and ``sshd_no_rsync`` (each a running server plus a per-test
``scratch`` dir) and the session-scoped servers behind them: import all four ``*_fixture``
names into a conftest or test module to use them.

``start_sshd(root)`` writes everything it needs under ``root`` and starts
``/usr/sbin/sshd``; ``hide_rsync=True`` gives sessions a PATH without rsync and python3 (see
its module docstring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow.testing.sshd import SSHD, SshServer, generate_key, sshd_unavailable, start_sshd

__all__ = [
    "SSHD",
    "SshServer",
    "generate_key",
    "sshd_fixture",
    "sshd_no_rsync_fixture",
    "sshd_no_rsync_session_server_fixture",
    "sshd_session_server_fixture",
    "sshd_unavailable",
    "start_sshd",
]

# --- pytest fixtures ---------------------------------------------------------------------------
# The servers start once per session (keys and config add up over a few dozen tests); each test
# gets its own remote scratch dir and its own known_hosts file, which it may add lines to.


def _serve(factory: pytest.TempPathFactory, name: str, *, hide_rsync: bool) -> Iterator[SshServer]:
    reason = sshd_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = start_sshd(factory.mktemp(name), hide_rsync=hide_rsync)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="sshd_session_server")
def sshd_session_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    yield from _serve(tmp_path_factory, "sshd", hide_rsync=False)


@pytest.fixture(scope="session", name="sshd_no_rsync_session_server")
def sshd_no_rsync_session_server_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SshServer]:
    yield from _serve(tmp_path_factory, "sshd-no-rsync", hide_rsync=True)


def _for_test(server: SshServer, tmp_path: Path) -> SshServer:
    scratch = tmp_path / "remote"
    scratch.mkdir()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    return dataclasses.replace(server, scratch=scratch, known_hosts=known_hosts)


@pytest.fixture(name="sshd")
def sshd_fixture(sshd_session_server: SshServer, tmp_path: Path) -> SshServer:
    """A real sshd on 127.0.0.1 whose sessions have rsync; ``.scratch`` is this test's dir."""
    return _for_test(sshd_session_server, tmp_path)


@pytest.fixture(name="sshd_no_rsync")
def sshd_no_rsync_fixture(sshd_no_rsync_session_server: SshServer, tmp_path: Path) -> SshServer:
    """A real sshd whose sessions find neither rsync nor python3 on PATH: SFTP and sha256sum."""
    return _for_test(sshd_no_rsync_session_server, tmp_path)
