"""Directories over SSH (``stageflow.transfer._ssh_dirs`` behind ``ssh_download``/``ssh_upload``).

Against the real sshd servers of sshd.py, both methods: nested trees both ways, replacing an
existing tree, a real SIGKILL mid-directory and a resume that re-sends only what was missing
(counted by a proxy on the wire), and remote listings that try to escape the destination.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from sshd import (
    SshServer,
    sshd_fixture,  # noqa: F401
    sshd_no_rsync_fixture,  # noqa: F401
    sshd_no_rsync_session_server_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)
from tcp_proxy import TcpProxy
from test_ssh import (  # the fixtures server and methods, and a helper
    VIA,
    methods_fixture,  # noqa: F401
    server_fixture,  # noqa: F401
    start_and_kill,
)

from stageflow.errors import IntegrityError, TransferError
from stageflow.transfer._ssh_dirs import check_name
from stageflow.transfer.ssh import ssh_download, ssh_upload

MiB = 1 << 20
AWKWARD = "it's a $(dir) with spaces; *"


def make_tree(root: Path, sizes: dict[str, int]) -> dict[str, str]:
    """Random files at the given relative paths; return {path: sha256}."""
    digests = {}
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def tree_of(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``; symlinks would fail the test."""
    found = {}
    for path in root.rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            found[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


NESTED = {
    "part_0.parquet": 300_000,
    "part_1.parquet": 1,
    "empty": 0,
    f"sub/{AWKWARD}/deeper/x.bin": 2 * MiB + 5,
    "sub/y.bin": 70_000,
}


@pytest.mark.parametrize("via", VIA)
async def test_directory_both_ways(
    via: str, server: SshServer, tmp_path: Path, methods: Callable[[], list[str]]
) -> None:
    source = server.scratch / "preds"
    expected = make_tree(source, NESTED)
    (source / "no_files_here" / "inner").mkdir(parents=True)
    dest = tmp_path / "local" / "preds"  # the parent does not exist yet
    seen: list[tuple[int, int]] = []
    total = sum(NESTED.values())

    got = await ssh_download(server.url(quote(str(source))), dest, server.options(),
                             progress=lambda d, t: seen.append((d, t)))  # fmt: skip

    assert got == dest and tree_of(dest) == expected
    assert (dest / "no_files_here" / "inner").is_dir()
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert os.listdir(dest.parent) == ["preds"]  # no temp dir left

    back = server.scratch / "deep" / AWKWARD / "back"  # the parents are created
    seen.clear()
    await ssh_upload(dest, server.url(quote(str(back))), server.options(),
                     progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert tree_of(back) == expected
    assert (back / "no_files_here" / "inner").is_dir()
    assert seen[-1] == (total, total)
    assert os.listdir(back.parent) == ["back"]
    assert methods() == [via, via]


@pytest.mark.parametrize("via", VIA)
async def test_an_existing_directory_is_replaced_whole(
    via: str, server: SshServer, tmp_path: Path
) -> None:
    """Files of the old tree that the new one lacks are gone; no temp or old dir is left."""
    old_remote, old_local = server.scratch / "out", tmp_path / "out"
    make_tree(old_remote, {"stale.bin": 10, "a/b.bin": 20})
    make_tree(old_local, {"stale.bin": 10, "a/b.bin": 20, "a/c.bin": 5})
    new = make_tree(tmp_path / "new", {"a/b.bin": 1000, "d.bin": 3})
    fresh = make_tree(server.scratch / "fresh", {"a/b.bin": 999, "e.bin": 4})

    await ssh_upload(tmp_path / "new", server.url(old_remote), server.options())
    await ssh_download(server.url(server.scratch / "fresh"), old_local, server.options())

    assert tree_of(old_remote) == new
    assert tree_of(old_local) == fresh
    assert sorted(os.listdir(server.scratch)) == ["fresh", "out"]
    assert sorted(os.listdir(tmp_path)) == ["known_hosts", "new", "out", "remote"]


async def test_a_file_is_not_replaced_by_a_directory(sshd: SshServer, tmp_path: Path) -> None:
    make_tree(sshd.scratch / "d", {"x": 10})
    (sshd.scratch / "f").write_bytes(b"keep me")
    (tmp_path / "f").write_bytes(b"keep me too")
    with pytest.raises(TransferError, match="not a directory") as caught:
        await ssh_upload(sshd.scratch / "d", sshd.url(sshd.scratch / "f"), sshd.options())
    assert caught.value.non_retryable
    with pytest.raises(ValueError, match="not a directory"):
        await ssh_download(sshd.url(sshd.scratch / "d"), tmp_path / "f", sshd.options())
    assert (sshd.scratch / "f").read_bytes() == b"keep me"
    assert (tmp_path / "f").read_bytes() == b"keep me too"


# --- hostile or odd listings -------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "inside.bin"])
async def test_remote_symlinks_are_refused_not_followed(
    via: str, target: str, server: SshServer, tmp_path: Path
) -> None:
    """Wherever it points (outside, or at a sibling), a link makes the directory refused."""
    make_tree(server.scratch / "d", {"inside.bin": 100, "sub/ok.bin": 10})
    (server.scratch / "d" / "sub" / "link").symlink_to(target)
    dest = tmp_path / "local" / "d"
    with pytest.raises(TransferError, match="symlink") as caught:
        await ssh_download(server.url(server.scratch / "d"), dest, server.options())
    assert caught.value.non_retryable
    assert not dest.exists() and not dest.parent.exists()


async def test_local_symlinks_are_refused_not_followed(sshd: SshServer, tmp_path: Path) -> None:
    make_tree(tmp_path / "d", {"a.bin": 10})
    (tmp_path / "d" / "escape").symlink_to("/etc")
    with pytest.raises(ValueError, match="symlink"):
        await ssh_upload(tmp_path / "d", sshd.url(sshd.scratch / "d"), sshd.options())
    assert list(sshd.scratch.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "", "../x", "a/b", "/etc/passwd", "x\x00y"])
def test_names_that_could_escape_are_refused(name: str) -> None:
    """What a hostile SFTP server could put in a listing, which no real file system can hold."""
    with pytest.raises(TransferError, match="outside the destination") as caught:
        check_name(name, "host:/d")
    assert caught.value.non_retryable


@pytest.mark.parametrize("name", ["...", "..x", "a b", "ü.parquet", "-rf", "x\ny"])
def test_odd_but_safe_names_are_kept(name: str) -> None:
    check_name(name, "host:/d")


# --- a changing source -------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
async def test_a_file_rewritten_on_every_copy_is_an_integrity_error(
    via: str, server: SshServer, tmp_path: Path
) -> None:
    make_tree(server.scratch / "d", {"a.bin": MiB, "b.bin": 1000})
    victim = server.scratch / "d" / "a.bin"
    dest = tmp_path / "d"

    def rewrite_when_copied(done: int, total: int) -> None:
        if done == total:  # every byte has been read: the copy is of the old content
            victim.write_bytes(os.urandom(MiB))

    with pytest.raises(IntegrityError, match=r"a\.bin") as caught:
        await ssh_download(server.url(server.scratch / "d"), dest, server.options(),
                           progress=rewrite_when_copied)  # fmt: skip
    assert caught.value.non_retryable
    assert not dest.exists()
    # the good file stays in the temp dir for the next attempt, the bad one does not
    assert tree_of(tmp_path / ".d.partial-dir").keys() == {"b.bin"}


# --- resuming after a real kill ----------------------------------------------------------------


def bytes_under(root: Path) -> int:
    if not root.is_dir():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_resume_after_kill_sends_only_what_is_missing(
    via: str,
    direction: str,
    server: SshServer,
    tmp_path: Path,
    methods: Callable[[], list[str]],
) -> None:
    sizes = {"a/0.bin": 2 * MiB, "a/1.bin": 2 * MiB, "b/2.bin": 2 * MiB, "3.bin": 2 * MiB}
    total, rate = sum(sizes.values()), 4 * MiB  # ~2 s in all: the kill lands mid-directory
    if direction == "download":
        expected = make_tree(server.scratch / "d", sizes)
        dest, temp = tmp_path / "d", tmp_path / ".d.partial-dir"
        argv = [direction, server.url(server.scratch / "d"), str(dest)]
    else:
        expected = make_tree(tmp_path / "d", sizes)
        dest, temp = server.scratch / "d", server.scratch / ".d.partial-dir"
        argv = [direction, str(tmp_path / "d"), server.url(dest)]
    left = await start_and_kill(
        [*argv, str(server.client_key), str(server.known_hosts), str(rate)],
        lambda: bytes_under(temp),
        total,
    )
    assert not dest.exists()
    complete = {p: os.stat(temp / p).st_ino for p in sizes
                if (temp / p).is_file() and os.stat(temp / p).st_size == sizes[p]}  # fmt: skip

    async with TcpProxy(server.port) as proxy:  # counts what really crosses the wire
        server.trust_port(proxy.port)
        url = server.url(server.scratch / "d", port=proxy.port)
        if direction == "download":
            await ssh_download(url, dest, server.options())
        else:
            await ssh_upload(tmp_path / "d", url, server.options())

    assert tree_of(dest) == expected
    assert not temp.exists()
    assert methods() == [via]
    for path, inode in complete.items():  # kept, not written again under another name
        assert os.stat(dest / path).st_ino == inode, path
    # what was missing, plus SSH framing, handshakes, listing, hashing and (rsync) block
    # checksums: under 5% of the directory
    assert proxy.bytes_forwarded < (total - left) + 0.05 * total, (proxy.bytes_forwarded, left)
