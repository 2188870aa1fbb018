"""Data-plane transfers against curl/nginx and rsync/sshd, on loopback, in one run.

    /work/venv/bin/python benchmarks/transfer.py [--size-gib 1] [--repeats 3] [--skip-4g]
        [--streams 1,2,4]

One random (incompressible) file of ``--size-gib`` is written once into a temp dir on disk and
served by:

* ``stageflow server`` in its own process (``python -m stageflow server`` with
  ``STAGEFLOW_HOME``/``STAGEFLOW_TOKEN``; the file is put into ``<home>/server`` with
  ``ContentStore.put_file`` first), so client and server never share a GIL;
* nginx, as root, with its own ``-p`` prefix, ``sendfile on``, ``access_log off``;
* two sshd on 127.0.0.1 (``tests/transfer/sshd.py``: generated keys, temp config), one whose
  sessions have rsync and one whose sessions do not (so ``ssh_download`` falls back to SFTP;
  python3 is put back on that PATH so both remote hashes are computed the same way).

and measured (each figure the median of ``--repeats``, sides alternating order every repeat,
``sync`` between runs so one run's writeback does not land on the next):

1. ``http.*``: ``http_client.download`` (verified per chunk and whole-file, fsynced, renamed into
   a store) into a store on disk and into one on tmpfs (/dev/shm), at each ``--streams``, against
   ``curl -s -o FILE`` from nginx into the same filesystem. Target ratio >= 0.9.
2. ``ssh.*``: ``ssh.ssh_download`` (rsync, and SFTP via the server without rsync; both verify
   with sha256 on both ends) against ``rsync -e ssh`` of the same file. Target ratio >= 1.0.
3. ``resume.*``: a download killed (SIGKILL) once half the file has landed, then resumed.
   Re-sent bytes = bytes received on resume - (size - bytes received before the kill). For
   stageflow both come from ``TransferStats.bytes_received`` (the killed child mirrors it into a
   shared 8-byte file, read while the child is SIGSTOPped just before the SIGKILL); for
   ``rsync --partial -e ssh``, from the size of its temp file when stopped and ``Literal data``
   of ``--stats`` on resume. rsync's whole process group is SIGKILLed (a crashed job or machine,
   as the stageflow child is); a context line stops it with SIGINT instead, which lets
   ``--partial`` keep the file. Target: <= one chunk per stream.
4. ``rss.*``: peak RSS (``wait4`` rusage of the child process) of a download of the file and of
   a 4x larger one (``--skip-4g`` skips it). Target: flat.

Stageflow clients run in child processes that time only the ``download``/``ssh_download`` call
(the import is what a worker has already paid); curl and rsync are timed around the process.
MB is 10**6 bytes. Every figure prints as ``name: value unit (baseline value, ratio)``, with the
spread, the target and CPU seconds per GiB on the indented line below. Everything started is
stopped by its pid and every temp file removed at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import getpass
import hashlib
import json
import mmap
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GiB = 1 << 30
MiB = 1 << 20
MB = 10**6
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36


# --------------------------------------------------------------------------------- child side
# ``transfer.py --child JSON`` runs one stageflow client and prints one JSON line on stdout.


def _child(spec: dict[str, Any]) -> int:
    from stageflow.transfer import http_client
    from stageflow.transfer.ssh import SshOptions, ssh_download
    from stageflow.transfer.store import ContentStore

    mode = spec["mode"]
    if mode == "http":
        token = str(spec["token"])
        locations = [str(spec["url"])]
        streams = int(spec["streams"])
        progress = None
        stats_type = http_client.TransferStats
        if spec.get("shared"):
            # bytes_received, mirrored into a shared 8-byte file as it changes, so the parent
            # can read it exactly while this process is stopped just before it is killed
            fd = os.open(str(spec["shared"]), os.O_RDWR)
            shared = mmap.mmap(fd, 8)
            os.close(fd)

            class SharedStats(http_client.TransferStats):
                def __setattr__(self, name: str, value: object) -> None:
                    object.__setattr__(self, name, value)
                    if name == "bytes_received":
                        struct.pack_into("<q", shared, 0, value)

            stats_type = SharedStats

            def progress(done: int, total: int) -> None:
                print(f"progress {done} {total}", flush=True)

        store = ContentStore(Path(str(spec["root"])) / "store")
        stats = stats_type()
        start = time.perf_counter()
        path = asyncio.run(
            http_client.download(
                str(spec["sha"]),
                locations,
                store,
                token=token,
                streams=streams,
                stats=stats,
                progress=progress,
            )
        )
        seconds = time.perf_counter() - start
        if path.stat().st_size != int(spec["size"]):
            raise SystemExit(f"{path} has {path.stat().st_size} bytes, not {spec['size']}")
        print(json.dumps({"seconds": seconds, "stats": dataclasses.asdict(stats)}), flush=True)
        return 0
    if mode == "ssh":
        opts = SshOptions(
            identity_file=Path(str(spec["key"])),
            known_hosts=Path(str(spec["known_hosts"])),
            connect_timeout=10.0,
        )
        dest = Path(str(spec["dest"]))
        start = time.perf_counter()
        asyncio.run(ssh_download(str(spec["url"]), dest, opts))
        seconds = time.perf_counter() - start
        if dest.stat().st_size != int(spec["size"]):
            raise SystemExit(f"{dest} has {dest.stat().st_size} bytes, not {spec['size']}")
        print(json.dumps({"seconds": seconds}), flush=True)
        return 0
    if mode == "idle":  # the floor of the RSS figures: interpreter plus the client's imports
        print(json.dumps({"seconds": 0.0}), flush=True)
        return 0
    raise SystemExit(f"unknown child mode {mode!r}")


# -------------------------------------------------------------------------------- parent side


@dataclass
class Run:
    """One finished child: what it printed, its exit, its resource usage."""

    out: str
    code: int
    rusage: resource.struct_rusage
    wall: float

    @property
    def cpu(self) -> float:
        return self.rusage.ru_utime + self.rusage.ru_stime

    @property
    def maxrss(self) -> int:
        return self.rusage.ru_maxrss * 1024  # Linux reports KiB

    def result(self) -> dict[str, Any]:
        for line in reversed(self.out.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"child printed no result: {self.out[-500:]!r}")


class Bench:
    """Temp dirs, the servers, and every process started, all torn down by ``close``."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.disk = Path(tempfile.mkdtemp(prefix="sf-transfer-bench-"))
        self.stack.callback(shutil.rmtree, self.disk, True)
        self.shm = Path(tempfile.mkdtemp(prefix="sf-transfer-bench-", dir="/dev/shm"))
        self.stack.callback(shutil.rmtree, self.shm, True)
        self.log = self.disk / "child-stderr.log"
        self.token = secrets.token_urlsafe(32)

    def close(self) -> None:
        self.stack.close()

    # -- processes ----------------------------------------------------------------------------

    def keep(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Stop ``proc`` by its pid at the end (SIGTERM, then SIGKILL)."""
        self.stack.callback(_stop, proc)
        return proc

    def child(self, spec: dict[str, object], *, env: dict[str, str] | None = None) -> Run:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        return self.run(argv, env=env)

    def run(self, argv: list[str], *, env: dict[str, str] | None = None) -> Run:
        """Run to completion; resource usage of exactly this process (``wait4``)."""
        with self.log.open("ab") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env)
            try:
                assert proc.stdout is not None
                out = proc.stdout.read().decode(errors="replace")
                _, status, rusage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - start
                proc.returncode = os.waitstatus_to_exitcode(status)
            finally:
                if proc.returncode is None:
                    _stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(argv)[:300]} exited {proc.returncode}:\n{self.stderr_tail()}"
            )
        return Run(out, proc.returncode, rusage, wall)

    def stderr_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    # -- servers ------------------------------------------------------------------------------

    def stageflow_server(self, home: Path) -> tuple[str, subprocess.Popen[bytes]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
        env.update(STAGEFLOW_HOME=str(home), STAGEFLOW_TOKEN=self.token)
        for _attempt in range(3):
            port = free_port()
            log = (home / "server.log").open("ab")
            proc = self.keep(
                subprocess.Popen(
                    [sys.executable, "-m", "stageflow", "server", "--port", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=home,
                )
            )
            log.close()
            url = f"http://127.0.0.1:{port}"
            if wait_http(f"{url}/v1/healthz", proc):
                return url, proc
            _stop(proc)
        raise RuntimeError(f"stageflow server did not start:\n{(home / 'server.log').read_text()}")

    def nginx(self, root: Path) -> tuple[str, subprocess.Popen[bytes]]:
        prefix = self.disk / "nginx"
        prefix.mkdir()
        for _attempt in range(3):
            port = free_port()
            conf = prefix / "nginx.conf"
            temp = "".join(
                f"  {kind}_temp_path {prefix / kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            conf.write_text(
                "user root;\nworker_processes 1;\ndaemon off;\n"
                f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'};\n"
                "events { worker_connections 64; }\n"
                "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
                f"{temp}"
                f"  server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n"
            )
            proc = self.keep(
                subprocess.Popen(
                    [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            url = f"http://127.0.0.1:{port}"
            if wait_http(url + "/", proc, any_status=True):
                return url, proc
            _stop(proc)
        raise RuntimeError(f"nginx did not start:\n{(prefix / 'error.log').read_text()}")

    def sshd(self, name: str, *, hide_rsync: bool) -> Any:
        sys.path.insert(0, str(REPO / "tests" / "transfer"))
        try:
            from sshd import sshd_unavailable, start_sshd  # tests/transfer/sshd.py
        finally:
            sys.path.pop(0)
        reason = sshd_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        server = start_sshd(self.disk / name, hide_rsync=hide_rsync)
        self.stack.callback(server.stop)
        if hide_rsync:  # no rsync (so SFTP), but python3 for the remote hash, as on the other
            python3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
            if python3:
                (server.root / "bin" / "python3").symlink_to(python3)
        return server


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is not None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, proc: subprocess.Popen[bytes], *, any_status: bool = False, limit: float = 20.0
) -> bool:
    deadline = time.monotonic() + limit
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with opener.open(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            if any_status:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def proc_cpu(pid: int) -> float:
    """utime + stime of a running process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def write_random(path: Path, size: int) -> None:
    block = 16 * MiB
    with path.open("wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def matching_bytes(path: Path, source: Path, *, block: int = MiB, sub: int = 4096) -> int:
    """How many bytes of ``path`` equal ``source`` at the same offsets (4 KiB granularity)."""
    same = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0
    with f, source.open("rb") as s:
        while True:
            a, b = f.read(block), s.read(block)
            if not a or not b:
                return same
            if a == b:
                same += len(a)
                continue
            for i in range(0, min(len(a), len(b)), sub):
                if a[i : i + sub] == b[i : i + sub]:
                    same += len(a[i : i + sub])


def clear(path: Path) -> None:
    """Remove a file or directory tree, then flush dirty pages so the next run starts clean."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    os.sync()


def rsync_ssh_command(server: Any) -> str:
    s = server
    return shlex.join(
        [
            "ssh", "-F", "none", "-p", str(s.port),
            "-i", str(s.client_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={s.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        ]
    )  # fmt: skip


def rsync_literal(out: str) -> int:
    match = re.search(r"Literal data: ([\d,.']+) bytes", out)
    if match is None:
        raise RuntimeError(f"no 'Literal data' in rsync --stats output:\n{out}")
    return int(re.sub(r"\D", "", match.group(1)))


# ----------------------------------------------------------------------------------- figures


@dataclass
class Timed:
    """Seconds per repeat of one side, and CPU seconds of the client and server."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def rate(self, size: int) -> float:
        return size / statistics.median(self.seconds) / MB

    def spread(self, size: int) -> str:
        return f"{size / max(self.seconds) / MB:.0f}-{size / min(self.seconds) / MB:.0f} MB/s"

    startup_cpu: float = 0.0
    """CPU of a child that only starts and imports (subtracted: a worker has paid it already)."""

    def cpu_per_gib(self, size: int) -> float:
        return max(statistics.median(self.cpu) - self.startup_cpu, 0.0) * GiB / size


def throughput_lines(
    name: str, side: Timed, base_name: str, base: Timed, size: int, target: str, repeats: int
) -> list[str]:
    rate, base_rate = side.rate(size), base.rate(size)
    extra = ""
    if side.server_cpu:
        extra = f", server {statistics.median(side.server_cpu) * GiB / size:.2f}"
    return [
        f"{name}: {rate:.0f} MB/s ({base_name} {base_rate:.0f} MB/s, {rate / base_rate:.2f})",
        f"    median of {repeats}; spread {side.spread(size)} vs {base.spread(size)}; "
        f"target ratio {target}; CPU s/GiB: client {side.cpu_per_gib(size):.2f}{extra}, "
        f"{base_name} {base.cpu_per_gib(size):.2f}",
    ]


def emit(lines: list[str], out: list[str]) -> None:
    for line in lines:
        print(line, flush=True)
    out.extend(lines)


# ------------------------------------------------------------------------------- measurements


class Benchmark:
    def __init__(self, args: argparse.Namespace, bench: Bench) -> None:
        self.args = args
        self.b = bench
        self.size = int(args.size_gib * GiB)
        self.figures: list[str] = []

    # -- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        from stageflow.settings import TransferSettings
        from stageflow.transfer.store import ContentStore

        b = self.b
        t = time.perf_counter()
        self.www = b.disk / "www"
        self.www.mkdir()
        self.src = self.www / "src.bin"
        write_random(self.src, self.size)
        self.home = b.disk / "server-home"
        self.home.mkdir()
        self.chunk_size = TransferSettings().chunk_size
        store = ContentStore(self.home / "server", chunk_size=self.chunk_size)
        self.sha = store.put_file(self.src, link=True).sha256  # the same inode nginx serves
        self.server_url, self.server = b.stageflow_server(self.home)
        self.nginx_url, _ = b.nginx(self.www)
        self.sshd = b.sshd("sshd", hide_rsync=False)
        self.sshd_sftp = b.sshd("sshd-no-rsync", hide_rsync=True)
        idle = [b.child({"mode": "idle"}) for _ in range(3)]
        self.idle_cpu = min(run.cpu for run in idle)
        self.idle_rss = min(run.maxrss for run in idle)
        os.sync()
        print(
            f"# setup {time.perf_counter() - t:.1f} s: {self.size / GiB:g} GiB random file "
            f"{self.sha[:12]}, chunk {self.chunk_size // MiB} MiB; stageflow server "
            f"{self.server_url} (pid {self.server.pid}), nginx {self.nginx_url}, sshd "
            f"{self.sshd.port} (rsync) and {self.sshd_sftp.port} (no rsync: SFTP)",
            flush=True,
        )

    def dests(self) -> list[tuple[str, Path]]:
        return [("file", self.b.disk / "dest"), ("tmpfs", self.b.shm / "dest")]

    # -- 1. HTTP ------------------------------------------------------------------------------

    def http_stageflow(self, dest: Path, streams: int, *, size: int | None = None,
                       sha: str | None = None) -> tuple[float, float, float, int]:  # fmt: skip
        spec = {
            "mode": "http",
            "url": self.server_url,
            "token": self.b.token,
            "sha": sha or self.sha,
            "size": size or self.size,
            "streams": streams,
            "root": str(dest),
        }
        dest.mkdir(parents=True, exist_ok=True)
        before = proc_cpu(self.server.pid)
        try:
            run = self.b.child(spec)
        finally:
            server_cpu = proc_cpu(self.server.pid) - before
            clear(dest)
        return float(run.result()["seconds"]), run.cpu, server_cpu, run.maxrss

    def http_curl(self, dest: Path) -> tuple[float, float, float]:
        """curl's seconds and CPU, and the seconds a sha256 and an fsync of its file then take.

        The last is not part of the baseline: it is the context line ``curl+sha256+fsync``,
        what curl would need to promise what a stageflow download does (a verified,
        durable file).
        """
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / "src.bin"
        try:
            run = self.b.run(["curl", "-s", "-f", "-o", str(out), f"{self.nginx_url}/src.bin"])
            if out.stat().st_size != self.size:
                raise RuntimeError(f"curl wrote {out.stat().st_size} bytes, not {self.size}")
            start = time.perf_counter()
            digest = hashlib.sha256()
            with out.open("rb") as f:
                while block := f.read(4 * MiB):
                    digest.update(block)
                os.fsync(f.fileno())
            if digest.hexdigest() != self.sha:
                raise RuntimeError("curl's copy does not hash like the source")
            after = time.perf_counter() - start
        finally:
            clear(dest)
        return run.wall, run.cpu, after

    def measure_http(self) -> Timed:
        streams = self.args.streams
        sides: dict[tuple[str, str], Timed] = {}
        cases: list[tuple[str, Path, str]] = []
        for label, dest in self.dests():
            cases.append((label, dest, "curl"))
            cases += [(label, dest, f"streams={n}") for n in streams]
        # warm-up: first-touch of fresh memory is slow on these VMs, and the first child pays
        # for cold imports; neither belongs to the first measured side
        verified: dict[str, Timed] = {}
        for _label, dest in self.dests():
            self.http_curl(dest)
            self.http_stageflow(dest, max(streams))
        for repeat in range(self.args.repeats):
            order = cases if repeat % 2 == 0 else cases[::-1]
            report = []
            for label, dest, side in order:
                timed = sides.setdefault(
                    (label, side), Timed(startup_cpu=0.0 if side == "curl" else self.idle_cpu)
                )
                if side == "curl":
                    seconds, cpu, after = self.http_curl(dest)
                    verified.setdefault(label, Timed()).seconds.append(seconds + after)
                else:
                    seconds, cpu, server_cpu, rss = self.http_stageflow(
                        dest, int(side.split("=")[1])
                    )
                    timed.server_cpu.append(server_cpu)
                    timed.rss.append(rss)
                timed.seconds.append(seconds)
                timed.cpu.append(cpu)
                report.append(f"{label}/{side} {self.size / seconds / MB:.0f}")
            print(f"# repeat {repeat + 1}/{self.args.repeats} http MB/s: {', '.join(report)}",
                  flush=True)  # fmt: skip
        for label, _dest in self.dests():
            base = sides[(label, "curl")]
            best = max(streams, key=lambda n: sides[(label, f"streams={n}")].rate(self.size))
            lines = throughput_lines(
                f"http.{label}.stageflow.best(streams={best})",
                sides[(label, f"streams={best}")],
                "curl",
                base,
                self.size,
                ">= 0.9",
                self.args.repeats,
            )
            for n in streams:
                lines += throughput_lines(
                    f"http.{label}.stageflow.streams={n}",
                    sides[(label, f"streams={n}")],
                    "curl",
                    base,
                    self.size,
                    ">= 0.9",
                    self.args.repeats,
                )
            check = verified[label]
            best_rate = sides[(label, f"streams={best}")].rate(self.size)
            check_rate, base_rate = check.rate(self.size), base.rate(self.size)
            lines += [
                f"http.{label}.curl+sha256+fsync: {check_rate:.0f} MB/s (curl "
                f"{base_rate:.0f} MB/s, {check_rate / base_rate:.2f})",
                f"    context, not a target: curl, then hashlib.sha256 and fsync of its file (what "
                f"a stageflow download also does); stageflow best / this = "
                f"{best_rate / check_rate:.2f}; spread {check.spread(self.size)}",
            ]
            emit(lines, self.figures)
        return sides[("file", f"streams={4 if 4 in streams else streams[-1]}")]

    # -- 2. SSH -------------------------------------------------------------------------------

    def ssh_stageflow(self, server: Any, dest: Path) -> tuple[float, float]:
        dest.mkdir(parents=True, exist_ok=True)
        spec = {
            "mode": "ssh",
            "url": f"ssh://{getpass.getuser()}@127.0.0.1:{server.port}{self.src}",
            "dest": str(dest / "src.bin"),
            "key": str(server.client_key),
            "known_hosts": str(server.known_hosts),
            "size": self.size,
        }
        try:
            run = self.b.child(spec)
        finally:
            clear(dest)
        return float(run.result()["seconds"]), run.cpu

    def ssh_rsync(self, dest: Path) -> tuple[float, float]:
        dest.mkdir(parents=True, exist_ok=True)
        argv = [
            "rsync", "-e", rsync_ssh_command(self.sshd),
            f"{getpass.getuser()}@127.0.0.1:{self.src}", str(dest / "src.bin"),
        ]  # fmt: skip
        try:
            run = self.b.run(argv)
            if (dest / "src.bin").stat().st_size != self.size:
                raise RuntimeError("rsync wrote the wrong size")
        finally:
            clear(dest)
        return run.wall, run.cpu

    def measure_ssh(self) -> None:
        cases: list[tuple[str, Path, str]] = []
        for label, dest in self.dests():
            cases += [(label, dest, side) for side in ("rsync -e ssh", "rsync", "sftp")]
        runners: dict[str, Callable[[Path], tuple[float, float]]] = {
            "rsync -e ssh": self.ssh_rsync,
            "rsync": lambda d: self.ssh_stageflow(self.sshd, d),
            "sftp": lambda d: self.ssh_stageflow(self.sshd_sftp, d),
        }
        runners["rsync"](self.dests()[1][1])  # warm-up (cold imports, first asyncssh connect)
        sides: dict[tuple[str, str], Timed] = {}
        for repeat in range(self.args.repeats):
            order = cases if repeat % 2 == 0 else cases[::-1]
            report = []
            for label, dest, side in order:
                seconds, cpu = runners[side](dest)
                startup = 0.0 if side == "rsync -e ssh" else self.idle_cpu
                timed = sides.setdefault((label, side), Timed(startup_cpu=startup))
                timed.seconds.append(seconds)
                timed.cpu.append(cpu)
                report.append(f"{label}/{side} {self.size / seconds / MB:.0f}")
            print(f"# repeat {repeat + 1}/{self.args.repeats} ssh MB/s: {', '.join(report)}",
                  flush=True)  # fmt: skip
        for label, _dest in self.dests():
            base = sides[(label, "rsync -e ssh")]
            lines = []
            for side in ("rsync", "sftp"):
                lines += throughput_lines(
                    f"ssh.{label}.stageflow.{side}",
                    sides[(label, side)],
                    "rsync -e ssh",
                    base,
                    self.size,
                    ">= 1.0",
                    self.args.repeats,
                )
            emit(lines, self.figures)

    # -- 3. resume ----------------------------------------------------------------------------

    def resume_stageflow(self, streams: int = 4) -> dict[str, float]:
        root = self.b.disk / "resume"
        root.mkdir()
        spec = {
            "mode": "http",
            "url": self.server_url,
            "token": self.b.token,
            "sha": self.sha,
            "size": self.size,
            "streams": streams,
            "root": str(root),
            "shared": str(root / "bytes_received"),
        }
        (root / "bytes_received").write_bytes(bytes(8))
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        try:
            with self.b.log.open("ab") as err:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
            try:
                assert proc.stdout is not None
                arrived = -1
                for raw in proc.stdout:
                    words = raw.decode().split()
                    if words[:1] == ["progress"] and int(words[1]) * 2 >= int(words[2]):
                        os.kill(proc.pid, signal.SIGSTOP)
                        (arrived,) = struct.unpack("<q", (root / "bytes_received").read_bytes())
                        os.kill(proc.pid, signal.SIGKILL)
                        break
                proc.wait()
            finally:
                _stop(proc)
            if arrived < 0:
                raise RuntimeError(f"the download ended before 50 %:\n{self.b.stderr_tail()}")
            partial = root / "store" / "partial" / self.sha
            kept = matching_bytes(partial, self.src)
            del spec["shared"]
            stats = self.b.child(spec).result()["stats"]
        finally:
            clear(root)
        received = stats["bytes_received"]
        return {
            "arrived": arrived,
            "kept": kept,
            "received": received,
            "resent": received - (self.size - arrived),
            "reused": stats["chunks_reused"],
        }

    def resume_rsync(self, sig: signal.Signals) -> dict[str, float]:
        root = self.b.disk / "resume-rsync"
        root.mkdir()
        dest = root / "src.bin"
        ssh = rsync_ssh_command(self.sshd)
        remote = f"{getpass.getuser()}@127.0.0.1:{self.src}"
        argv = ["rsync", "--partial", "-e", ssh, remote, str(dest)]
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            group: list[int] = []
            try:
                arrived = -1
                while proc.poll() is None:
                    if _largest(root) * 2 >= self.size:
                        os.killpg(proc.pid, signal.SIGSTOP)
                        group = _group(proc.pid)
                        arrived = _largest(root)
                        if sig == signal.SIGKILL:
                            os.killpg(proc.pid, signal.SIGKILL)
                        else:
                            os.kill(proc.pid, sig)
                            os.killpg(proc.pid, signal.SIGCONT)
                        break
                    time.sleep(0.002)
                proc.wait(60)
            finally:
                _stop(proc)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _reap(group)
            if arrived < 0:
                raise RuntimeError("rsync finished before 50 %")
            # after SIGINT rsync keeps receiving until the signal reaches its receiver
            arrived = max(arrived, matching_bytes(dest, self.src))
            kept = matching_bytes(dest, self.src)
            out = self.b.run(["rsync", "--partial", "--stats", *argv[2:]]).out
        finally:
            clear(root)
        literal = rsync_literal(out)
        return {
            "arrived": arrived,
            "kept": kept,
            "received": literal,
            "resent": literal - (self.size - arrived),
        }

    def measure_resume(self) -> None:
        streams = 4
        sf = self.resume_stageflow(streams)
        rk = self.resume_rsync(signal.SIGKILL)
        ri = self.resume_rsync(signal.SIGINT)
        target = streams * self.chunk_size
        ratio = sf["resent"] / rk["resent"] if rk["resent"] > 0 else float("nan")
        lines = [
            f"resume.http.stageflow.resent: {sf['resent'] / MiB:.1f} MiB "
            f"(rsync --partial, SIGKILL {rk['resent'] / MiB:.1f} MiB, {ratio:.2f})",
            f"    streams={streams}, killed at {sf['arrived'] / self.size * 100:.1f} % received; "
            f"kept on disk {sf['kept'] / MiB:.1f} MiB ({sf['reused']:.0f} chunks reused), "
            f"fetched on resume {sf['received'] / MiB:.1f} MiB; target <= one chunk per stream "
            f"= {target / MiB:.0f} MiB",
            f"    rsync (whole process group SIGKILLed) at {rk['arrived'] / self.size * 100:.1f} %"
            f": kept {rk['kept'] / MiB:.1f} MiB under the destination name, literal data on "
            f"resume {rk['received'] / MiB:.1f} MiB",
            f"resume.rsync.sigint.resent: {ri['resent'] / MiB:.1f} MiB "
            f"(rsync --partial, SIGKILL {rk['resent'] / MiB:.1f} MiB, "
            f"{ri['resent'] / rk['resent'] if rk['resent'] > 0 else float('nan'):.2f})",
            f"    rsync sent SIGINT at 50 %, had received {ri['arrived'] / self.size * 100:.1f} % "
            f"when it exited (--partial keeps the file when rsync can clean up): kept "
            f"{ri['kept'] / MiB:.1f} MiB, literal data on resume {ri['received'] / MiB:.1f} MiB "
            "(context, not a target)",
        ]
        emit(lines, self.figures)

    # -- 4. RSS -------------------------------------------------------------------------------

    def measure_rss(self, small: Timed) -> None:
        from stageflow.transfer.store import ContentStore

        floor = self.idle_rss
        small_rss = max(small.rss)
        lines: list[str]
        if self.args.skip_4g:
            lines = [
                f"rss.client.{self.size / GiB:g}GiB: {small_rss / MiB:.0f} MiB "
                f"(idle client process {floor / MiB:.0f} MiB, {small_rss / floor:.2f})",
                "    streams=4, into a file; --skip-4g: no larger file measured",
            ]
            emit(lines, self.figures)
            return
        big_size = 4 * self.size
        big = self.b.disk / "big.bin"
        t = time.perf_counter()
        try:
            write_random(big, big_size)
            store = ContentStore(self.home / "server", chunk_size=self.chunk_size)
            big_sha = store.put_file(big, link=True).sha256
            big.unlink()
            os.sync()
            print(f"# rss: {big_size / GiB:g} GiB file ready in {time.perf_counter() - t:.1f} s",
                  flush=True)  # fmt: skip
            seconds, _cpu, _scpu, big_rss = self.http_stageflow(
                self.b.disk / "dest-big", 4, size=big_size, sha=big_sha
            )
        finally:
            big.unlink(missing_ok=True)
            with contextlib.suppress(NameError, FileNotFoundError):
                store.remove(big_sha)
            os.sync()
        lines = [
            f"rss.client.{big_size / GiB:g}GiB: {big_rss / MiB:.0f} MiB "
            f"({self.size / GiB:g} GiB {small_rss / MiB:.0f} MiB, {big_rss / small_rss:.2f})",
            f"    streams=4, into a file (peak of {len(small.rss)} runs for "
            f"{self.size / GiB:g} GiB, 1 run for {big_size / GiB:g} GiB at "
            f"{big_size / seconds / MB:.0f} MB/s); idle client process {floor / MiB:.0f} MiB; "
            "target flat (ratio ~1.0)",
        ]
        emit(lines, self.figures)


def _largest(directory: Path) -> int:
    """Size of the largest file in ``directory`` (rsync's temp file, or the file itself)."""
    sizes = [0]
    for entry in os.scandir(directory):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file(follow_symlinks=False):
                sizes.append(entry.stat(follow_symlinks=False).st_size)
    return max(sizes)


def _group(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _reap(pids: list[int]) -> None:
    """Collect processes that were reparented to us (we are their subreaper) once they exit."""
    deadline = time.monotonic() + 5
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (already reaped, or reparented elsewhere)
                left.discard(pid)
                continue
            if done:
                left.discard(pid)
        time.sleep(0.02)


# ------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="file size (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    parser.add_argument("--skip-4g", action="store_true", help="skip the 4x-size RSS figure")
    parser.add_argument(
        "--streams",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[1, 2, 4],
        help="HTTP stream counts to try (default 1,2,4)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["http", "ssh", "resume", "rss"],
        default=["http", "ssh", "resume", "rss"],
        help="run only these parts (rss reuses the http runs' RSS when http runs)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and (args.repeats < 1 or args.size_gib <= 0 or min(args.streams) < 1):
        parser.error("--repeats, --size-gib and --streams must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return _child(json.loads(args.child))
    if os.geteuid() != 0:
        print("# note: nginx is run as root (`user root;`); run this benchmark as root",
              file=sys.stderr)  # fmt: skip
    # orphans of a killed rsync are reparented to us, so that they can be reaped
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on SIGTERM too
    versions = {}
    for tool, flag in (("curl", "--version"), ("rsync", "--version"), (NGINX, "-v")):
        try:
            done = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
            versions[Path(tool).name] = (done.stdout or done.stderr).splitlines()[0]
        except OSError:
            versions[Path(tool).name] = "missing"
    print(
        f"# stageflow transfer benchmark: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {args.size_gib:g} GiB, {args.repeats} repeats, streams "
        f"{','.join(map(str, args.streams))}; {'; '.join(versions.values())}",
        flush=True,
    )
    bench = Bench()
    try:
        b = Benchmark(args, bench)
        b.setup()
        small = Timed()
        if "http" in args.only:
            small = b.measure_http()
        if "ssh" in args.only:
            b.measure_ssh()
        if "resume" in args.only:
            b.measure_resume()
        if "rss" in args.only:
            if not small.rss:
                _s, _c, _sc, rss = b.http_stageflow(bench.disk / "dest", 4)
                small.rss.append(rss)
            b.measure_rss(small)
        print("\n# summary")
        for line in b.figures:
            print(line)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
