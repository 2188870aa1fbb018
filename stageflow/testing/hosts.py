"""Several "machines" on one Linux box: network namespaces on a bridge, each with a private disk.

Everything else in the test suite runs on one machine with one filesystem, which can hide a path
that only works because two processes see the same disk. A :class:`Cluster` makes named hosts:

- each host is a network namespace with one veth interface (``eth0``, its own address in the
  cluster's /24) plugged into a bridge in the root namespace, which holds ``.1``: the hosts reach
  each other by address only, and the process that made the cluster reaches every host;
- every command started on a host (:meth:`Host.popen`, :meth:`Host.run`) also gets a private
  mount namespace in which a tmpfs hides the directory holding *every* host's data dir, and only
  this host's own data dir is bind-mounted back: another host's files do not exist there;
- :meth:`Host.link_down` / :meth:`Host.link_up` cut and restore a host's cable,
  :meth:`Host.netem` adds delay and loss (it raises :class:`Unavailable` where the kernel lacks
  ``sch_netem``), and ``HostSpec(name, disk_mb=N)`` gives a host a data dir that is a tmpfs of N
  MiB, so that it can really fill up.

It needs root. :func:`unavailable` says why a cluster cannot be made here (pytest fixtures skip
with that reason). Each cluster's namespaces, links and bridge are named after its id
(``sfh`` + 5 characters, so they fit Linux's 15-character interface names), and its state is
recorded under ``/run/stageflow-hosts``: :func:`clean_leftovers` (run by every new cluster)
removes what a crashed run left behind: clusters whose owner process is gone. Processes started
on a host are in their own process group, get SIGKILL when the process that started them dies
(PDEATHSIG: start them from the main thread, as it fires when the starting *thread* exits), and
are killed with the cluster on :meth:`Cluster.close`.

As a script (root)::

    python -m stageflow.testing.hosts up [--no-services]   # hosts + services, until Ctrl-C
    python -m stageflow.testing.hosts status
    python -m stageflow.testing.hosts exec worker1 -- ls /    # a command on a host
    python -m stageflow.testing.hosts down

``up`` makes the four hosts of docs/hosts.md (``dataserver``, ``source``, ``worker1``,
``worker2``) under ``/tmp/stageflow-hosts/sfhlocal`` and starts their services (see
stageflow/testing/services.py), printing addresses and URLs; with ``--no-services`` it only
makes the hosts and returns, and ``down`` removes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from stageflow._process import die_with_parent

__all__ = [
    "Cluster",
    "Host",
    "HostSpec",
    "Unavailable",
    "clean_leftovers",
    "unavailable",
]

PREFIX = "sfh"
"""Every cluster id starts with this; ids are 8 characters (interface names: 15 at most)."""
STATE_DIR = Path("/run/stageflow-hosts")
CLI_ID = "sfhlocal"
CLI_ROOT = Path("/tmp/stageflow-hosts") / CLI_ID
_SUBNET_BASE = "10.213"  # clusters take 10.213.N.0/24, N free in the root namespace's routes
_HOST_OFFSET = 10  # host i has .10+i; the bridge (the root namespace) has .1
_HIDE_SCRIPT = """set -e
own=$1 stash=$2 all=$3 cwd=$4; shift 4
mount --rbind "$own" "$stash"
mount -t tmpfs -o size=1m,mode=0755 stageflow-hosts-hidden "$all"
mkdir -p "$own"
mount --move "$stash" "$own"
cd "$cwd"
exec "$@"
"""
"""Run in the host's new mount namespace: keep the host's own data dir aside, hide the directory
of all data dirs under an empty tmpfs, put the own one back, then become the command."""


class Unavailable(RuntimeError):
    """This machine cannot do what was asked (not root, no namespaces, no ``sch_netem``)."""


@dataclass(frozen=True)
class HostSpec:
    """A host to make: its name and, optionally, a data dir that is a tmpfs of ``disk_mb`` MiB."""

    name: str
    disk_mb: int | None = None


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def unavailable() -> str | None:
    """Why a cluster cannot be made here, or ``None`` when it can (probes for real, ~50 ms)."""
    if os.geteuid() != 0:
        return "multi-host tests need root (network and mount namespaces); CI runs them as root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / util-linux)"
    probe = f"{PREFIX}probe-{os.getpid()}"
    made = _sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    try:
        script = "mount -t tmpfs -o size=1m probe /mnt && test -d /mnt"
        inner = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        tried = _sh("ip", "netns", "exec", probe, *inner, check=False)
        if tried.returncode != 0:
            return f"private mount namespaces with tmpfs do not work here: {tried.stderr.strip()}"
    finally:
        _sh("ip", "netns", "delete", probe, check=False)
    return None


class Host:
    """One host of a :class:`Cluster`: a network namespace, an address and a private data dir."""

    def __init__(self, cluster: Cluster, index: int, spec: HostSpec) -> None:
        self.cluster = cluster
        self.name = spec.name
        self.spec = spec
        self.address = f"{cluster.subnet}.{_HOST_OFFSET + index}"
        """This host's IPv4 address; every other host and the cluster's maker reach it here."""
        self.data_dir = cluster.root / "hosts" / spec.name
        """This host's private dir: the same path inside the host and (for tests) outside it."""
        self.netns = f"{cluster.id}-{spec.name}"
        self.veth = f"{cluster.id}v{index}"  # the root namespace's end of the cable

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"

    def argv(self, argv: Sequence[str], *, cwd: Path | None = None) -> list[str]:
        """``argv`` wrapped to run on this host (its netns and a private mount namespace)."""
        root = self.cluster.root
        private = ["unshare", "--mount", "--propagation", "private", "--"]
        hide = [
            "sh", "-c", _HIDE_SCRIPT, "stageflow-host",
            str(self.data_dir), str(root / ".stash"), str(root / "hosts"),
            str(cwd or self.data_dir),
        ]  # fmt: skip
        return ["ip", "netns", "exec", self.netns, *private, *hide, *argv]

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host; stdout and stderr are appended to ``log`` if given.

        The environment is this process's minus ``STAGEFLOW_*`` and ``TEMPORAL_*`` (a host sees
        only the settings it is given), plus ``env``. The process leads its own process group,
        dies with its starter (PDEATHSIG) and is killed with the cluster."""
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "TEMPORAL_"))
        }
        environment.update(env or {})
        out = open(log, "ab") if log is not None else None  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(
                self.argv(argv, cwd=cwd),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            if out is not None:
                out.close()
        self.cluster._processes.append(process)
        return process

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to completion and capture its output (text)."""
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "TEMPORAL_"))
        }
        environment.update(env or {})
        result = subprocess.run(
            self.argv(argv, cwd=cwd),
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, list(argv), result.stdout, result.stderr
            )
        return result

    def link_down(self) -> None:
        """Unplug this host's cable: nobody reaches it and it reaches nobody until link_up()."""
        _sh("ip", "link", "set", self.veth, "down")

    def link_up(self) -> None:
        """Plug the cable back in."""
        _sh("ip", "link", "set", self.veth, "up")

    def netem(self, delay_ms: float = 0.0, loss_pct: float = 0.0) -> None:
        """Delay and drop this host's outgoing packets (``tc netem``); ``netem()`` undoes it.

        Raises :class:`Unavailable` where the kernel has no ``sch_netem`` module."""
        if delay_ms == 0 and loss_pct == 0:
            _sh("ip", "netns", "exec", self.netns, "tc", "qdisc", "del", "dev", "eth0", "root",
                check=False)  # fmt: skip
            return
        result = _sh(
            "ip", "netns", "exec", self.netns, "tc", "qdisc", "replace", "dev", "eth0", "root",
            "netem", "delay", f"{delay_ms}ms", "loss", f"{loss_pct}%", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            error = result.stderr.strip()
            if "qdisc kind is unknown" in error or "netem" in error.lower():
                raise Unavailable(
                    f"kernel lacks sch_netem (tc says: {error}); load it with `modprobe sch_netem` "
                    "or run this where the kernel has it"
                )
            raise RuntimeError(f"tc netem on {self.name} failed: {error}")


def _owner_alive(state: Mapping[str, object]) -> bool:
    """Whether the process that made a cluster still runs (pid and start time both match)."""
    pid, started = state.get("owner_pid"), state.get("owner_started")
    if pid is None:
        return True  # made by `hosts up`: it lives until `hosts down`
    try:
        return bool(psutil.Process(int(str(pid))).create_time() == started)
    except (psutil.Error, ValueError):
        return False


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root`` in this mount namespace, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove(cluster_id: str, root: Path | None) -> None:
    """Remove every namespace, link and mount of cluster ``cluster_id`` (whatever is left)."""
    for line in _sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{cluster_id}-"):
            with contextlib.suppress(OSError):
                for pid in _sh("ip", "netns", "pids", name, check=False).stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
            _sh("ip", "netns", "delete", name, check=False)
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(cluster_id):
            _sh("ip", "link", "delete", name, check=False)
    if root is not None:
        for point in _mounts_under(root):
            _sh("umount", "-l", point, check=False)
    (STATE_DIR / f"{cluster_id}.json").unlink(missing_ok=True)


def clean_leftovers(*, only: str | None = None) -> list[str]:
    """Remove clusters whose owner is gone (or cluster ``only``, whoever owns it); their ids."""
    ids: set[str] = set()
    for line in _sh("ip", "netns", "list", check=False).stdout.splitlines():
        if line.startswith(PREFIX):
            ids.add(line.split("-")[0])
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip()
        if name.startswith(PREFIX):
            ids.add(name[:8])
    if STATE_DIR.is_dir():
        ids.update(path.stem for path in STATE_DIR.glob(f"{PREFIX}*.json"))
    removed = []
    for cluster_id in sorted(ids):
        state: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((STATE_DIR / f"{cluster_id}.json").read_text())
        if only is not None and cluster_id != only:
            continue
        if only is None and state and _owner_alive(state):
            continue
        root = Path(str(state["root"])) if state.get("root") else None
        _remove(cluster_id, root)
        removed.append(cluster_id)
    return removed


def _free_subnet(cluster_id: str) -> str:
    routes = _sh("ip", "-4", "route", "show", check=False).stdout
    start = int(cluster_id[3:], 36) % 250
    for step in range(250):
        subnet = f"{_SUBNET_BASE}.{(start + step) % 250 + 1}"
        if f"{subnet}.0/24" not in routes:
            return subnet
    raise Unavailable(f"no free /24 left in {_SUBNET_BASE}.0.0/16 for another cluster")


class Cluster:
    """Named hosts on one bridge; a context manager (or call :meth:`close`) that removes them.

    ``Cluster(["dataserver", HostSpec("worker1", disk_mb=64)], root=tmp)`` makes the hosts at
    once (root needed: see :func:`unavailable`); their data dirs are ``root/hosts/<name>``."""

    def __init__(
        self,
        hosts: Iterable[str | HostSpec],
        *,
        root: Path,
        cluster_id: str | None = None,
        persistent: bool = False,
    ) -> None:
        specs = [h if isinstance(h, HostSpec) else HostSpec(h) for h in hosts]
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("host names must be unique")
        self.id = cluster_id or PREFIX + secrets.token_hex(3)[:5]
        if len(self.id) != 8 or not self.id.startswith(PREFIX):
            raise ValueError(f"a cluster id is {PREFIX!r} and 5 more characters")
        self.root = root.resolve()
        self._processes: list[subprocess.Popen[bytes]] = []
        clean_leftovers()
        clean_leftovers(only=self.id)  # a persistent cluster of the same id is replaced
        self.subnet = _free_subnet(self.id)
        self.gateway = f"{self.subnet}.1"
        """The root namespace's address on the bridge (where the cluster's maker is reached)."""
        self.bridge = f"{self.id}br"
        self.hosts: dict[str, Host] = {s.name: Host(self, i, s) for i, s in enumerate(specs)}
        self._record(persistent)
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _record(self, persistent: bool) -> None:
        me = psutil.Process()
        state = {
            "root": str(self.root),
            "subnet": self.subnet,
            "hosts": {h.name: h.address for h in self.hosts.values()},
            "owner_pid": None if persistent else me.pid,
            "owner_started": None if persistent else me.create_time(),
        }
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / f"{self.id}.json").write_text(json.dumps(state, indent=2))

    def _create(self) -> None:
        (self.root / "hosts").mkdir(parents=True, exist_ok=True)
        (self.root / ".stash").mkdir(exist_ok=True)
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for index, host in enumerate(self.hosts.values()):
            host.data_dir.mkdir(exist_ok=True)
            if host.spec.disk_mb is not None:
                _sh("mount", "-t", "tmpfs", "-o", f"size={host.spec.disk_mb}m",
                    f"{self.id}-{host.name}", str(host.data_dir))  # fmt: skip
            peer, ns = f"{self.id}p{index}", host.netns
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
            _sh("ip", "link", "set", host.veth, "master", self.bridge, "up")
            _sh("ip", "link", "set", peer, "netns", ns)
            _sh("ip", "-n", ns, "link", "set", peer, "name", "eth0")
            _sh("ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill every process started on the hosts, then remove namespaces, links and mounts."""
        for process in self._processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self._processes.clear()
        _remove(self.id, self.root)

    def describe(self) -> dict[str, object]:
        """The cluster as JSON-able data: id, root, and each host's address and data dir."""
        return {
            "id": self.id,
            "root": str(self.root),
            "gateway": self.gateway,
            "hosts": {
                h.name: {"address": h.address, "data_dir": str(h.data_dir)}
                for h in self.hosts.values()
            },
        }


# --- the script --------------------------------------------------------------------------------

DEFAULT_HOSTS = ("dataserver", "source", "worker1", "worker2")


def _load_cli_cluster() -> Cluster:
    """The `up` cluster, re-attached from its state file (for `exec`)."""
    path = STATE_DIR / f"{CLI_ID}.json"
    if not path.exists():
        raise SystemExit("no cluster: run `python -m stageflow.testing.hosts up` first")
    state = json.loads(path.read_text())
    cluster = Cluster.__new__(Cluster)
    cluster.id, cluster.root, cluster.subnet = CLI_ID, Path(state["root"]), state["subnet"]
    cluster.gateway, cluster.bridge, cluster._processes = f"{state['subnet']}.1", "", []
    cluster.hosts = {
        name: Host(cluster, i, HostSpec(name)) for i, name in enumerate(state["hosts"])
    }
    return cluster


def _up(args: argparse.Namespace) -> int:
    from stageflow.testing.services import start_services  # services import this module

    cluster = Cluster(DEFAULT_HOSTS, root=CLI_ROOT, cluster_id=CLI_ID, persistent=True)
    print(json.dumps(cluster.describe(), indent=2))
    if args.no_services:
        return 0
    try:
        services = start_services(cluster)
        for line in services.summary():
            print(line)
        print("Ctrl-C stops the services and removes the hosts", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.close()
    return 0


def _exec(args: argparse.Namespace) -> int:
    cluster = _load_cli_cluster()
    if args.host not in cluster.hosts:
        raise SystemExit(f"no host {args.host!r}; hosts: {', '.join(cluster.hosts)}")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    host = cluster.hosts[args.host]
    return subprocess.call(host.argv(command or ["sh"], cwd=Path.cwd()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stageflow.testing.hosts", description=(
        "Hosts as network namespaces with private data dirs (root needed); see docs/hosts.md."
    ))  # fmt: skip
    commands = parser.add_subparsers(dest="verb", required=True)
    up = commands.add_parser("up", help="make the hosts and start their services (Ctrl-C ends)")
    up.add_argument("--no-services", action="store_true", help="only make the hosts, and return")
    commands.add_parser("down", help="remove the hosts (and any leftover of a crashed run)")
    commands.add_parser("status", help="print the hosts as JSON")
    run = commands.add_parser("exec", help="run a command on a host: exec HOST -- CMD...")
    run.add_argument("host")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.verb in ("up", "exec", "down"):
        reason = unavailable()
        if reason is not None:
            raise SystemExit(reason)
    if args.verb == "up":
        return _up(args)
    if args.verb == "down":
        removed = clean_leftovers(only=CLI_ID) + clean_leftovers()
        print(f"removed: {', '.join(removed) or 'nothing'}")
        return 0
    if args.verb == "status":
        path = STATE_DIR / f"{CLI_ID}.json"
        print(path.read_text() if path.exists() else "no cluster (`up` makes one)")
        return 0
    return _exec(args)


if __name__ == "__main__":
    sys.exit(main())
