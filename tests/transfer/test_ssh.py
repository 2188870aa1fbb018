"""Tests for ``stageflow.transfer.ssh`` against real sshd processes on loopback (sshd.py).

Which tool moved the bytes is checked twice: by the library's log record, and independently by
sshd's own log (an SFTP session shows up there as ``subsystem 'sftp'``; the rsync path never
opens one). Faults are real: a transfer process SIGKILLed mid-way, connections cut by a proxy,
a source rewritten while it is being copied, keys and host keys that do not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from sshd import (  # the fixtures sshd and sshd_no_rsync, and the servers behind them
    SshServer,
    generate_key,
    sshd_fixture,  # noqa: F401
    sshd_no_rsync_fixture,  # noqa: F401
    sshd_no_rsync_session_server_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)
from tcp_proxy import TcpProxy

from stageflow.errors import AuthError, DiskFullError, IntegrityError, TransferError
from stageflow.transfer import ssh
from stageflow.transfer._ssh_remote import connect
from stageflow.transfer.ssh import SshOptions, SshUrl, ssh_download, ssh_upload

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20

VIA = ["rsync", "sftp"]
AWKWARD = "it's a $(file) with spaces; *.bin"  # quoting in every remote command is exercised


@pytest.fixture(name="server")
def server_fixture(request: pytest.FixtureRequest) -> SshServer:
    """The sshd for the method named by the test's ``via`` parameter."""
    via = request.node.callspec.params["via"]
    fixture = "sshd" if via == "rsync" else "sshd_no_rsync"
    result: SshServer = request.getfixturevalue(fixture)
    return result


@pytest.fixture(name="methods")
def methods_fixture(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The transfer methods the library reported choosing, in order."""
    caplog.set_level(logging.INFO, logger="stageflow.transfer.ssh")

    def chosen() -> list[str]:
        return [r.ssh_method for r in caplog.records if hasattr(r, "ssh_method")]

    return chosen


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs to fill up (needs root; skipped, saying why, where it cannot mount)."""
    mountpoint = tmp_path / "tiny-fs"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 4 MiB tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_used(server: SshServer, log_from: int, via: str) -> None:
    """sshd's own log agrees on the method: SFTP sessions appear there, rsync never opens one."""
    sftp_sessions = server.log_since(log_from).count("subsystem 'sftp'")
    if via == "sftp":
        assert sftp_sessions >= 1
    else:
        assert sftp_sessions == 0


# --- URLs --------------------------------------------------------------------------------------


def test_parse_url() -> None:
    url = SshUrl.parse("ssh://etl@data-1.example:2222/exports/day%20one.parquet")
    assert (url.user, url.host, url.port, url.path) == (
        "etl",
        "data-1.example",
        2222,
        "/exports/day one.parquet",
    )
    assert str(SshUrl.parse("ssh://u@h/x")) == "ssh://u@h:22/x"
    assert SshUrl.parse("ssh://u@[::1]:2200/x").rsync_spec == "u@[::1]:/x"
    assert SshUrl.parse("ssh://host/x").user  # defaults to the local user, as ssh does


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("http://h/x", "not an SSH URL"),
        ("h:/x", "not an SSH URL"),
        ("ssh://u@h", "names no file"),
        ("ssh://u@h/", "names no file"),
        ("ssh:///x", "names no host"),
        ("ssh://u:secret@h/x", "password"),
        ("ssh://u@h:99999/x", "port"),
        ("ssh://u@h:0/x", "port"),
        ("ssh://u@h:ssh/x", "port"),
        ("ssh://-oProxyCommand=touch%20pwned/x", "not a valid host"),
        ("ssh://-l@h/x", "not a valid user"),
        ("ssh://u@h/data/", "without it"),
        ("ssh://u@h/~/x", "home-relative"),
        ("ssh://u@h/x?y", "query"),
        ("ssh://u@h/x#y", "query"),
        ("ssh://u@h/a\nb", "control character"),
    ],
)
async def test_bad_urls_are_value_errors(url: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=says):
        SshUrl.parse(url)
    with pytest.raises(ValueError, match=says):  # refused before any connection is attempted
        await ssh_download(url, tmp_path / "x")


def test_public_api() -> None:
    assert sorted(ssh.__all__) == ["Progress", "SshOptions", "SshUrl", "ssh_download", "ssh_upload"]
    assert SshOptions().strict_host_key_checking is True


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
async def test_download(
    via: str, server: SshServer, tmp_path: Path, methods: Callable[[], list[str]]
) -> None:
    source = server.scratch / AWKWARD
    data = random_file(source, 3 * MiB + 123)
    dest = tmp_path / "local" / "dst.bin"  # the parent does not exist yet
    seen: list[tuple[int, int]] = []
    log_from = server.log_size()

    got = await ssh_download(
        server.url(quote(str(source))),
        dest,
        server.options(),
        progress=lambda done, total: seen.append((done, total)),
    )

    assert got == dest
    assert dest.read_bytes() == data and sha(dest.read_bytes()) == sha(data)
    assert methods() == [via]
    assert_used(server, log_from, via)
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dst.bin"]  # no temp file left


@pytest.mark.parametrize("via", VIA)
async def test_upload(
    via: str, server: SshServer, tmp_path: Path, methods: Callable[[], list[str]]
) -> None:
    data = random_file(tmp_path / "src.bin", 3 * MiB + 123)
    remote = server.scratch / "deep" / "er" / AWKWARD  # the directories are created
    seen: list[tuple[int, int]] = []
    log_from = server.log_size()

    await ssh_upload(
        tmp_path / "src.bin",
        server.url(quote(str(remote))),
        server.options(),
        progress=lambda done, total: seen.append((done, total)),
    )

    assert remote.read_bytes() == data and sha(remote.read_bytes()) == sha(data)
    assert methods() == [via]
    assert_used(server, log_from, via)
    assert seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in remote.parent.iterdir()) == [AWKWARD]


@pytest.mark.parametrize("via", VIA)
async def test_empty_file_both_ways(via: str, server: SshServer, tmp_path: Path) -> None:
    (server.scratch / "empty").write_bytes(b"")
    got = await ssh_download(server.url(server.scratch / "empty"), tmp_path / "e", server.options())
    assert got.read_bytes() == b""
    await ssh_upload(got, server.url(server.scratch / "back"), server.options())
    assert (server.scratch / "back").read_bytes() == b""


@pytest.mark.parametrize("via", VIA)
async def test_remote_sha256_of_whole_file_and_prefix(via: str, server: SshServer) -> None:
    """python3 (the rsync server's PATH has it) and sha256sum (the other's) give the same."""
    data = random_file(server.scratch / AWKWARD, 3 * MiB + 7)
    url = SshUrl.parse(server.url(quote(str(server.scratch / AWKWARD))))
    async with connect(url, server.options()) as remote:
        assert await remote.sha256(url.path) == sha(data)
        for n in (0, 1, MiB, MiB + 1, len(data), len(data) + 10):
            assert await remote.sha256(url.path, n) == sha(data[:n])


async def test_rsync_probe_is_cached_per_host(
    sshd: SshServer, tmp_path: Path, methods: Callable[[], list[str]]
) -> None:
    random_file(sshd.scratch / "a", 1000)
    async with TcpProxy(sshd.port) as proxy:  # a host:port this process has not probed yet
        sshd.trust_port(proxy.port)
        log_from = sshd.log_size()
        for i in range(3):
            await ssh_download(sshd.url(sshd.scratch / "a", port=proxy.port), tmp_path / f"a{i}",
                               sshd.options())  # fmt: skip
    # per transfer: stat, hash (during the copy), rsync's own ssh, stat again; plus the probe
    sessions = sshd.log_since(log_from).count("Starting session: command")
    assert sessions == 3 * 4 + 1
    assert methods() == ["rsync"] * 3


# --- resuming after a real kill ----------------------------------------------------------------

_CHILD = """
import asyncio, sys
from pathlib import Path
from stageflow.transfer.ssh import SshOptions, ssh_download, ssh_upload
direction, a, b, key, known_hosts, rate = sys.argv[1:]
opts = SshOptions(identity_file=Path(key), known_hosts=Path(known_hosts), bandwidth_limit=int(rate))
if direction == "download":
    asyncio.run(ssh_download(a, Path(b), opts))
else:
    asyncio.run(ssh_upload(Path(a), b, opts))
"""


async def start_and_kill(argv: list[str], written: Callable[[], int], size: int) -> int:
    """Run a transfer in a child process, SIGKILL it at ~40%; return the bytes left behind.

    ``written()`` counts the bytes in the temp file (or temp dir) now. Only the Python process
    is killed, as when a worker dies: the rsync/ssh it started must stop with it (they would
    otherwise keep writing the temp file under the next attempt).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], env=env)
    try:
        deadline = time.monotonic() + 20
        while written() < 0.4 * size:
            assert child.poll() is None, f"transfer ended (rc {child.returncode}) before the kill"
            assert time.monotonic() < deadline, "transfer made no progress"
            await asyncio.sleep(0.02)
        descendants = psutil.Process(child.pid).children(recursive=True)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    deadline = time.monotonic() + 5
    while (alive := running(descendants)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for proc in alive:
        proc.kill()
    assert not alive, f"still running after the worker was killed: {alive}"
    left = written()
    assert 0 < left < size
    return left


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (a zombie waiting for init to reap it is not)."""
    running = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
    return running


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_resume_after_kill(
    via: str,
    direction: str,
    server: SshServer,
    tmp_path: Path,
    methods: Callable[[], list[str]],
) -> None:
    size = 8 * MiB
    rate = 4 * MiB  # ~2 s for the whole file: the kill lands mid-way
    if direction == "download":
        data = random_file(server.scratch / "big.bin", size)
        src_url, dest = server.url(server.scratch / "big.bin"), tmp_path / "big.bin"
        partial = tmp_path / ".big.bin.partial"
        argv = [direction, src_url, str(dest)]
    else:
        data = random_file(tmp_path / "big.bin", size)
        dest = server.scratch / "big.bin"
        partial = server.scratch / ".big.bin.partial"
        argv = [direction, str(tmp_path / "big.bin"), server.url(dest)]
    left = await start_and_kill(
        [*argv, str(server.client_key), str(server.known_hosts), str(rate)],
        lambda: partial.stat().st_size if partial.exists() else 0,
        size,
    )
    assert not dest.exists()

    # again, unthrottled, through a proxy that counts what really crosses the wire
    async with TcpProxy(server.port) as proxy:
        server.trust_port(proxy.port)
        url = server.url(server.scratch / "big.bin", port=proxy.port)
        if direction == "download":
            await ssh_download(url, dest, server.options())
        else:
            await ssh_upload(tmp_path / "big.bin", url, server.options())

    assert dest.read_bytes() == data
    assert not partial.exists()
    assert methods() == [via]
    # what was missing, plus SSH framing, handshakes and (rsync) block checksums: under 5%
    assert proxy.bytes_forwarded < (size - left) + 0.05 * size, (proxy.bytes_forwarded, left)


@pytest.mark.parametrize("via", VIA)
async def test_stale_partial_from_another_source_is_not_kept(
    via: str, server: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A temp file left by an attempt on an older version of the source: the result is right.

    rsync's delta algorithm re-sends the blocks that differ; SFTP finds that the prefix does not
    hash like the source's first bytes and starts over.
    """
    caplog.set_level(logging.INFO, logger="stageflow.transfer.ssh")
    data = random_file(server.scratch / "src.bin", 2 * MiB)
    (tmp_path / ".dst.bin.partial").write_bytes(os.urandom(MiB))
    dest = await ssh_download(server.url(server.scratch / "src.bin"), tmp_path / "dst.bin",
                              server.options())  # fmt: skip
    assert dest.read_bytes() == data
    assert not (tmp_path / ".dst.bin.partial").exists()
    assert ("starting over" in caplog.text) == (via == "sftp")


@pytest.mark.parametrize("via", VIA)
async def test_bandwidth_limit(via: str, server: SshServer, tmp_path: Path) -> None:
    """2 MiB at 1 MiB/s cannot take less than about two seconds; unlimited, it takes far less."""
    size, rate = 2 * MiB, 1 * MiB
    random_file(server.scratch / "src.bin", size)
    url = server.url(server.scratch / "src.bin")
    elapsed = []
    for i, limit in enumerate([None, rate]):
        start = time.monotonic()
        await ssh_download(url, tmp_path / f"d{i}", server.options(bandwidth_limit=limit))
        elapsed.append(time.monotonic() - start)
    # a lower bound only: a loaded machine can make a transfer slower, never faster
    assert elapsed[1] >= 0.85 * size / rate > elapsed[0], elapsed


@pytest.mark.parametrize("via", VIA)
async def test_full_disk_is_a_disk_full_error_and_leaves_nothing(
    via: str, server: SshServer, tiny_fs: Path
) -> None:
    random_file(server.scratch / "src.bin", 6 * MiB)
    with pytest.raises(DiskFullError) as caught:
        await ssh_download(server.url(server.scratch / "src.bin"), tiny_fs / "dst.bin",
                           server.options())  # fmt: skip
    assert caught.value.non_retryable
    assert list(tiny_fs.iterdir()) == []


# --- the source changes under the copy: IntegrityError, nothing in place ------------------------


@pytest.mark.parametrize("via", VIA)
async def test_download_of_a_changing_source_is_an_integrity_error(
    via: str, server: SshServer, tmp_path: Path
) -> None:
    source = server.scratch / "src.bin"
    random_file(source, 2 * MiB)
    dest = tmp_path / "local" / "dst.bin"

    def rewrite_source_when_copied(done: int, total: int) -> None:
        if done == total:  # every byte has been read: the copy is of the old content
            with source.open("r+b") as f:
                f.write(b"tampered")

    with pytest.raises(IntegrityError, match="sha256") as caught:
        await ssh_download(server.url(source), dest, server.options(),
                           progress=rewrite_source_when_copied)  # fmt: skip
    assert caught.value.non_retryable
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the temp file is gone too: a retry starts clean


@pytest.mark.parametrize("via", VIA)
async def test_upload_of_a_changing_source_is_an_integrity_error(
    via: str, server: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "src.bin"
    random_file(source, 2 * MiB)

    def rewrite_source_when_copied(done: int, total: int) -> None:
        if done == total:
            with source.open("r+b") as f:
                f.write(b"tampered")

    with pytest.raises(IntegrityError, match="sha256"):
        await ssh_upload(source, server.url(server.scratch / "dst.bin"), server.options(),
                         progress=rewrite_source_when_copied)  # fmt: skip
    assert list(server.scratch.iterdir()) == []  # neither the file nor its temp name


async def test_a_source_rewritten_with_the_same_bytes_is_still_caught(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The source's hash is taken while the copy runs, so hashes alone could agree on a torn
    read; its version (inode, mtime, ctime) taken before and after the copy must agree too."""
    source = sshd.scratch / "src.bin"
    data = random_file(source, 2 * MiB)
    dest = tmp_path / "dst.bin"

    def rewrite_same_bytes(done: int, total: int) -> None:
        if done == total:
            time.sleep(0.01)  # a later ctime even on coarse clocks
            source.write_bytes(data)

    with pytest.raises(IntegrityError, match="changed during the transfer"):
        await ssh_download(sshd.url(source), dest, sshd.options(), progress=rewrite_same_bytes)
    assert not dest.exists() and not (tmp_path / ".dst.bin.partial").exists()
    assert (await ssh_download(sshd.url(source), dest, sshd.options())).read_bytes() == data


# --- network failures: retryable, and the retry resumes -----------------------------------------


@pytest.mark.parametrize("via", VIA)
async def test_cut_connection_is_a_retryable_transfer_error(
    via: str, server: SshServer, tmp_path: Path
) -> None:
    data = random_file(server.scratch / "src.bin", 4 * MiB)
    dest = tmp_path / "dst.bin"
    async with TcpProxy(server.port, cut_after=MiB) as proxy:
        server.trust_port(proxy.port)
        with pytest.raises(TransferError) as caught:
            await ssh_download(server.url(server.scratch / "src.bin", port=proxy.port), dest,
                               server.options())  # fmt: skip
    assert proxy.cuts >= 1
    assert type(caught.value) is TransferError and not caught.value.non_retryable
    assert not dest.exists()

    await ssh_download(server.url(server.scratch / "src.bin"), dest, server.options())
    assert dest.read_bytes() == data


async def test_unreachable_host_is_a_retryable_transfer_error(
    sshd: SshServer, tmp_path: Path
) -> None:
    async with TcpProxy(sshd.port) as proxy:
        port = proxy.port  # a port that was just listening and now is not
    with pytest.raises(TransferError) as caught:
        await ssh_download(sshd.url("/x", port=port), tmp_path / "x", sshd.options())
    assert type(caught.value) is TransferError and not caught.value.non_retryable


# --- authentication: non-retryable AuthError saying what to fix --------------------------------


async def test_wrong_key_is_an_auth_error(sshd: SshServer, tmp_path: Path) -> None:
    random_file(sshd.scratch / "src.bin", 1000)
    stranger = generate_key(tmp_path / "stranger_ed25519")
    with pytest.raises(AuthError) as caught:
        await ssh_download(sshd.url(sshd.scratch / "src.bin"), tmp_path / "dst",
                           sshd.options(identity_file=stranger))  # fmt: skip
    message = str(caught.value)
    assert str(stranger) in message and f"127.0.0.1:{sshd.port}" in message
    assert "authorized_keys" in message
    assert caught.value.non_retryable
    assert not (tmp_path / "dst").exists()


async def test_unknown_host_key_is_an_auth_error(sshd: SshServer, tmp_path: Path) -> None:
    random_file(sshd.scratch / "src.bin", 1000)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(AuthError) as caught:
        await ssh_download(sshd.url(sshd.scratch / "src.bin"), tmp_path / "dst",
                           sshd.options(known_hosts=empty))  # fmt: skip
    message = str(caught.value)
    assert str(empty) in message and "ssh-keyscan" in message and str(sshd.port) in message
    assert caught.value.non_retryable

    with pytest.raises(AuthError, match="does not exist"):
        await ssh_download(sshd.url(sshd.scratch / "src.bin"), tmp_path / "dst",
                           sshd.options(known_hosts=tmp_path / "missing"))  # fmt: skip


@pytest.mark.parametrize("strict", [True, False])
async def test_changed_host_key_is_an_auth_error(
    strict: bool, sshd: SshServer, tmp_path: Path
) -> None:
    """A host listed with another key is refused even when first use is trusted."""
    random_file(sshd.scratch / "src.bin", 1000)
    impostor = generate_key(tmp_path / "impostor_ed25519")
    known_hosts = tmp_path / "known_hosts_other_key"
    public = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {public}\n")
    with pytest.raises(AuthError, match="does NOT match") as caught:
        await ssh_download(sshd.url(sshd.scratch / "src.bin"), tmp_path / "dst",
                           sshd.options(known_hosts=known_hosts,
                                        strict_host_key_checking=strict))  # fmt: skip
    assert "ssh-keygen -R" in str(caught.value)
    assert known_hosts.read_text().count("\n") == 1  # nothing was added


async def test_trust_on_first_use_records_the_key(
    sshd: SshServer, tmp_path: Path, methods: Callable[[], list[str]]
) -> None:
    data = random_file(sshd.scratch / "src.bin", 1000)
    fresh = tmp_path / "ssh" / "known_hosts"  # neither the file nor its directory exist
    opts = sshd.options(known_hosts=fresh, strict_host_key_checking=False)
    dest = await ssh_download(sshd.url(sshd.scratch / "src.bin"), tmp_path / "dst", opts)
    assert dest.read_bytes() == data
    assert methods() == ["rsync"]  # OpenSSH's accept-new found the key recorded by asyncssh
    assert fresh.read_text() == sshd.known_hosts_line()


# --- what is not transferred -------------------------------------------------------------------


async def test_missing_remote_file_is_not_retried(sshd: SshServer, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no such file") as caught:
        await ssh_download(sshd.url(sshd.scratch / "nope"), tmp_path / "x", sshd.options())
    assert caught.value.non_retryable


async def test_special_files_are_refused(sshd: SshServer, tmp_path: Path) -> None:
    os.mkfifo(sshd.scratch / "fifo")
    with pytest.raises(TransferError, match="neither a regular file nor a directory") as caught:
        await ssh_download(sshd.url(sshd.scratch / "fifo"), tmp_path / "x", sshd.options())
    assert caught.value.non_retryable
    with pytest.raises(ValueError, match="not a regular file or directory"):
        await ssh_upload(sshd.scratch / "fifo", sshd.url(sshd.scratch / "x"), sshd.options())
    (sshd.scratch / "d").mkdir()
    with pytest.raises(TransferError, match="not a regular file") as caught:
        await ssh_upload(Path(__file__), sshd.url(sshd.scratch / "d"), sshd.options())
    assert caught.value.non_retryable
