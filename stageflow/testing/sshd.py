"""A real OpenSSH server for tests and the multi-host harness: generated ed25519 keys, stopped
by its pid.

``start_sshd(root)`` writes everything it needs under ``root`` (host key, client key,
authorized_keys, sshd_config, pid file, log, known_hosts for the client) and starts
``/usr/sbin/sshd -D -e -f CONFIG``; the login user is whoever runs it. By default it listens on a
free loopback port; ``host``/``port`` and ``spawn`` (how to start the process, e.g.
``Host.popen`` of stageflow/testing/hosts.py, so that it runs inside a network namespace) serve
the multi-host harness. The pytest fixtures built on it live in tests/transfer/sshd.py.

Sessions get ``HOME`` pointed at an empty directory (``SetEnv``), so the login user's shell rc
files, which may prepend directories to PATH or take a second to run, play no part.

``start_sshd(root, hide_rsync=True)`` also gives sessions a PATH with a few shell tools but
neither rsync nor python3, so a client that probes with ``command -v rsync`` must fall back to
SFTP and the remote hash to ``sha256sum``. This too is done with ``SetEnv`` in sshd_config:
starting sshd with a restricted PATH in *its* environment would not work, because sshd builds
each session's PATH itself.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.engine.devserver import free_port
from stageflow.transfer.ssh import SshOptions

__all__ = ["SSHD", "Spawn", "SshServer", "generate_key", "sshd_unavailable", "start_sshd"]

Spawn = Callable[[Sequence[str], Path], "subprocess.Popen[bytes]"]
"""Starts ``argv`` with stdout and stderr appended to the log file it is given."""

SSHD = "/usr/sbin/sshd"
_PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without its privilege separation dir
_TOOLS_WITHOUT_RSYNC = ("sh", "bash", "cat", "cut", "head", "mkdir", "mv", "rm", "sha256sum", "wc")
_START_TIMEOUT_S = 10.0


def sshd_unavailable() -> str | None:
    """Why an sshd cannot be started here, or ``None`` when it can."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    if not _PRIVSEP_DIR.is_dir():
        try:
            _PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            return f"sshd needs {_PRIVSEP_DIR} and it cannot be created: {exc}"
    return None


def generate_key(path: Path) -> Path:
    """A fresh passphrase-less ed25519 key pair at ``path`` and ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stageflow-test", "-f", str(path)],
        check=True,
    )
    return path


@dataclass
class SshServer:
    """A running sshd and what a client needs to log in to it."""

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str  # "ssh-ed25519 AAAA...", for known_hosts lines of other ports
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    scratch: Path = field(default=Path("/nonexistent"))  # a per-test remote dir (conftest)

    def url(self, path: Path | str, *, port: int | None = None) -> str:
        return f"ssh://{self.user}@{self.host}:{port or self.port}{path}"

    def options(self, **overrides: object) -> SshOptions:
        """Options that log in with the generated client key and trust only this server."""
        settings: dict[str, object] = {
            "identity_file": self.client_key,
            "known_hosts": self.known_hosts,
            "connect_timeout": 5.0,
        }
        settings.update(overrides)
        return SshOptions(**settings)  # type: ignore[arg-type]

    def known_hosts_line(self, port: int | None = None) -> str:
        return f"[{self.host}]:{port or self.port} {self.host_public_key}\n"

    def trust_port(self, port: int) -> None:
        """Also trust this server's key when reached through ``port`` (a proxy in front)."""
        with self.known_hosts.open("a") as f:
            f.write(self.known_hosts_line(port))

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """What sshd logged after ``offset`` (from ``log_size()``)."""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        """Stop sshd by its pid; sessions still open end when their clients hang up."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn_here(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def start_sshd(
    root: Path,
    *,
    hide_rsync: bool = False,
    host: str = "127.0.0.1",
    port: int | None = None,
    spawn: Spawn = _spawn_here,
) -> SshServer:
    """Start an sshd whose files all live under ``root``; raise if it does not come up.

    ``port=None`` picks a free loopback port (retried if it is taken meanwhile); a fixed
    ``port`` suits a host of its own (a network namespace) where nothing else listens."""
    reason = sshd_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    root.mkdir(parents=True, exist_ok=True)
    host_key = generate_key(root / "host_ed25519")
    client_key = generate_key(root / "client_ed25519")
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    host_public_key = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])

    home = root / "home"  # empty: the login shell's rc files are not the test's business
    home.mkdir()
    session_env = f"SetEnv HOME={home}\n"
    if hide_rsync:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for tool in _TOOLS_WITHOUT_RSYNC:
            found = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
            if found:
                (bin_dir / tool).symlink_to(found)
        session_env = f"SetEnv PATH={bin_dir} HOME={home}\n"

    log_path = root / "sshd.log"
    fixed_port = port
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = fixed_port or free_port()
        config = root / "sshd_config"
        config.write_text(
            f"ListenAddress {host}\n"
            f"Port {port}\n"
            f"HostKey {host_key}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "StrictModes no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
            "MaxStartups 100\n"
            f"{session_env}"
        )
        process = spawn([SSHD, "-D", "-e", "-f", str(config)], log_path)
        if _wait_listening(process, log_path, host, port):
            break
        process.kill()
        process.wait()
    else:
        raise RuntimeError(f"sshd did not start; its log:\n{log_path.read_text()}")

    known_hosts = root / "known_hosts"
    server = SshServer(
        host=host,
        port=port,
        user=getpass.getuser(),
        client_key=client_key,
        known_hosts=known_hosts,
        host_public_key=host_public_key,
        root=root,
        log_path=log_path,
        process=process,
    )
    known_hosts.write_text(server.known_hosts_line())
    return server


def _wait_listening(process: subprocess.Popen[bytes], log_path: Path, host: str, port: int) -> bool:
    """Wait for sshd's own "listening" line: a connect test could reach someone else's port."""
    ready = f"Server listening on {host} port {port}."
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready in log_path.read_text(errors="replace"):
            return True
        time.sleep(0.02)
    return False
