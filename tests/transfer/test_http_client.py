"""The transfer client against real servers, with real faults: SIGKILL, corrupt disks, full
filesystems, dead and late peers, connections cut mid-body."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from dataplane_server import (  # noqa: F401  (fixtures)
    CHUNK,
    TOKEN,
    ServeFactory,
    files_under,
    make_store_fixture,
    serve_fixture,
    small_fs_fixture,
)
from tcp_proxy import TcpProxy

from stageflow.engine.devserver import free_port
from stageflow.errors import AuthError, DiskFullError, IntegrityError, TransferError
from stageflow.transfer.http_client import (
    PeerRejectedError,
    TransferStats,
    download,
    fetch_dir,
    upload,
)
from stageflow.transfer.store import ContentStore

MakeStore = Callable[..., ContentStore]
SCRIPT = Path(__file__).resolve().parent / "http_transfer_script.py"
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_leftovers(store: ContentStore) -> None:
    assert files_under(store.root / "partial") == []
    assert files_under(store.root / "tmp") == []


async def test_download_round_trip_with_progress(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(MiB + 12345)
    server = serve(make_store("a"))
    digest = server.store.put_bytes(data).sha256
    local = make_store("b", chunk_size=CHUNK * 2)  # a different chunk size is fine
    seen: list[tuple[int, int]] = []
    stats = TransferStats()
    path = await download(
        digest, [server.url], local, token=TOKEN, progress=lambda d, t: seen.append((d, t)),
        stats=stats,
    )  # fmt: skip
    assert path == local.path(digest) and path.read_bytes() == data
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert stats.bytes_received == len(data)
    assert stats.chunks_transferred == -(-len(data) // CHUNK)
    assert local.chunk_manifest(digest).chunk_size == CHUNK * 2
    no_leftovers(local)

    again = TransferStats()
    await download(digest, [server.url], local, token=TOKEN, stats=again)
    assert again.bytes_received == 0, "an object already in the store is not fetched again"


async def test_directory_round_trip_between_two_stores(
    make_store: MakeStore,
    serve: ServeFactory,
    tmp_path: Path,
) -> None:
    src = tmp_path / "outputs"
    files = {
        "part_0.parquet": os.urandom(CHUNK * 3 + 1),
        "part_1.parquet": os.urandom(CHUNK // 2),
        "meta/schema.json": b'{"columns": ["a", "b"]}',
        "meta/empty": b"",
        "bin/run.sh": b"#!/bin/sh\nexit 0\n",
        "copy/part_1.parquet": b"",
    }
    files["copy/part_1.parquet"] = files["part_1.parquet"]
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "bin/run.sh").chmod(0o755)

    worker = make_store("worker-staging")
    dir_info = worker.put_dir(src, link=True)
    server = serve(worker)
    receiver = make_store("elsewhere/receiver-staging")
    already = receiver.put_bytes(files["meta/schema.json"])  # present before: not fetched

    stats = TransferStats()
    seen: list[tuple[int, int]] = []
    manifest = await fetch_dir(
        dir_info.sha256, [server.url], receiver, token=TOKEN, stats=stats,
        progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    assert manifest.size == dir_info.size == sum(len(d) for d in files.values())
    unique = {sha(d): len(d) for d in files.values()}
    manifest_bytes = len(worker.path(dir_info.sha256).read_bytes())
    expected = manifest_bytes + sum(n for s, n in unique.items() if s != already.sha256)
    assert stats.bytes_received == expected
    assert seen[-1] == (manifest.size, manifest.size)

    dest = tmp_path / "inputs" / "run-1" / "train" / "data"
    receiver.materialize(dir_info.sha256, "dir", dest)
    got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == files
    assert os.access(dest / "bin/run.sh", os.X_OK)
    assert receiver.root != worker.root and not receiver.root.is_relative_to(worker.root)
    no_leftovers(receiver)


async def run_then_kill_halfway(args: list[str]) -> tuple[int, int]:
    """Run the transfer script; SIGKILL it once it reports half the bytes landed."""
    env = {**os.environ, "STAGEFLOW_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    killed_at = total = -1
    try:
        while line := (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode():
            if line.strip() == "finished":
                break
            done, total = map(int, line.split())
            if done >= total // 2:
                proc.send_signal(signal.SIGKILL)
                killed_at = done
                break
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    stderr = (await proc.stderr.read()).decode()
    assert killed_at >= 0, f"the transfer ended before half way: {stderr[-2000:]}"
    assert killed_at < total, "killed too late to test a resume"
    assert proc.returncode == -signal.SIGKILL
    return killed_at, total


async def test_download_killed_halfway_resumes_without_resending(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(8 * MiB)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    local = make_store("dest")
    streams = 4
    killed_at, total = await run_then_kill_halfway(
        ["download", "--sha", digest, "--url", server.url, "--root", str(local.root),
         "--chunk-size", str(CHUNK), "--streams", str(streams), "--bandwidth", str(4 * MiB)]
    )  # fmt: skip
    assert total == len(data)
    assert not local.has(digest) and local.partial_path(digest).exists()

    stats = TransferStats()
    path = await download(digest, [server.url], local, token=TOKEN, streams=streams, stats=stats)
    assert path.read_bytes() == data
    remaining = total - killed_at
    assert stats.bytes_received <= remaining + streams * CHUNK, (killed_at, stats)
    assert stats.chunks_reused * CHUNK >= killed_at, (killed_at, stats)
    assert stats.bytes_received < total, (killed_at, stats)
    no_leftovers(local)


async def test_upload_killed_halfway_resumes_without_resending(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(8 * MiB)
    local = make_store("worker")
    digest = local.put_bytes(data).sha256
    server = serve(make_store("data-server"))
    streams = 4
    killed_at, total = await run_then_kill_halfway(
        ["upload", "--sha", digest, "--url", server.url, "--root", str(local.root),
         "--chunk-size", str(CHUNK), "--streams", str(streams), "--bandwidth", str(4 * MiB)]
    )  # fmt: skip
    assert total == len(data) and not server.store.has(digest)

    stats = TransferStats()
    await upload(digest, local, server.url, token=TOKEN, streams=streams, stats=stats)
    assert server.store.path(digest).read_bytes() == data
    assert stats.bytes_sent <= (total - killed_at) + streams * CHUNK, (killed_at, stats)
    assert stats.chunks_reused * CHUNK >= killed_at, (killed_at, stats)
    no_leftovers(server.store)


async def test_a_chunk_corrupted_on_the_servers_disk_is_caught(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(CHUNK * 16)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    stored = server.store.path(digest)
    stored.chmod(0o644)
    with open(stored, "r+b") as f:  # flip bytes inside chunk 5, as a failing disk would
        f.seek(5 * CHUNK + 100)
        original = f.read(8)
        f.seek(5 * CHUNK + 100)
        f.write(bytes(b ^ 0xFF for b in original))
    local = make_store("dest")
    stats = TransferStats()
    with pytest.raises(TransferError, match=r"no longer served anywhere") as caught:
        await download(digest, [server.url], local, token=TOKEN, stats=stats)
    assert server.url in str(caught.value) and digest in str(caught.value)
    # The server's verdict: its copy is quarantined. (This client may not have seen the answer:
    # another stream can get the 404 that follows the quarantine first, ending the transfer.)
    assert not server.store.has(digest)
    assert [p.name for p in (server.store.root / "quarantine").iterdir() if p.name.endswith(digest)]
    assert not local.has(digest)
    assert files_under(local.root / "objects") == []
    assert files_under(local.root / "partial") == [digest]  # verified chunks kept for a retry


async def test_a_locally_corrupt_object_is_not_uploaded(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    local = make_store("worker")
    digest = local.put_bytes(os.urandom(CHUNK * 4)).sha256
    path = local.path(digest)
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(b"rot")
    server = serve(make_store("server"))
    stats = TransferStats()
    with pytest.raises(IntegrityError, match=r"local copy .* is corrupt"):
        await upload(digest, local, server.url, token=TOKEN, streams=1, stats=stats)
    assert stats.bytes_sent == 0
    assert files_under(server.store.root / "objects") == []


@pytest.mark.parametrize("token", ["", "the-wrong-token-entirely"])
async def test_a_refused_token_is_an_auth_error(
    make_store: MakeStore,
    serve: ServeFactory,
    token: str,
) -> None:
    server = serve(make_store("server"))
    digest = server.store.put_bytes(b"secret bytes").sha256
    local = make_store("local")
    status = "401" if not token else "403"
    with pytest.raises(AuthError, match=f"refused our token \\({status}"):
        await download(digest, [server.url], local, token=token)
    local_digest = local.put_bytes(b"to upload").sha256
    with pytest.raises(AuthError, match="STAGEFLOW_TOKEN"):
        await upload(local_digest, local, server.url, token=token)
    assert not local.has(digest)
    assert not server.store.has(local_digest)


async def test_locations_are_tried_in_order_until_one_has_it(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(CHUNK * 3)
    empty = serve(make_store("empty"))
    holder = serve(make_store("holder"))
    digest = holder.store.put_bytes(data).sha256
    dead = f"http://127.0.0.1:{free_port()}"
    local = make_store("local")
    stats = TransferStats()
    path = await download(
        digest, [dead, empty.url, holder.url], local, token=TOKEN, retries=2, stats=stats
    )
    assert path.read_bytes() == data
    assert stats.requests_retried >= 1


async def test_every_location_failing_is_a_retryable_transfer_error(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    empty = serve(make_store("empty"))
    dead = f"http://127.0.0.1:{free_port()}"
    missing = sha(b"nobody has this")
    with pytest.raises(TransferError) as caught:
        await download(missing, [dead, empty.url], make_store("local"), token=TOKEN, retries=2)
    assert not getattr(caught.value, "non_retryable", False)
    assert dead in str(caught.value) and f"{empty.url}: does not have it" in str(caught.value)
    with pytest.raises(ValueError, match="http"):
        await download(missing, ["ftp://host/x"], make_store("local"), token=TOKEN)


async def test_a_peer_that_comes_up_late_is_waited_for(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    source = make_store("source")
    data = os.urandom(CHUNK * 2)
    digest = source.put_bytes(data).sha256
    port = free_port()
    stats = TransferStats()
    task = asyncio.create_task(
        download(digest, [f"http://127.0.0.1:{port}"], make_store("local"), token=TOKEN,
                 retries=8, stats=stats)
    )  # fmt: skip
    await asyncio.sleep(0.4)
    assert not task.done()
    serve(source, port=port)
    path = await asyncio.wait_for(task, timeout=20)
    assert path.read_bytes() == data
    assert stats.requests_retried >= 1


async def test_connections_cut_mid_body_are_retried(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(CHUNK * 8)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    stats = TransferStats()
    async with TcpProxy(server.port, cut_after=CHUNK + CHUNK // 2) as proxy:
        path = await download(
            digest, [f"http://127.0.0.1:{proxy.port}"], make_store("local"), token=TOKEN,
            streams=2, retries=10, stats=stats,
        )  # fmt: skip
    assert path.read_bytes() == data
    assert proxy.cuts >= 1 and stats.requests_retried >= 1


async def test_bandwidth_cap_holds_across_streams(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(MiB)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    started = time.monotonic()
    await download(
        digest, [server.url], make_store("capped"), token=TOKEN, streams=4, bandwidth=2 * MiB
    )
    capped = time.monotonic() - started
    assert capped >= 0.4, f"1 MiB at 2 MiB/s took {capped:.2f} s"
    local = make_store("uploader")
    up_digest = local.put_bytes(os.urandom(MiB // 2)).sha256
    started = time.monotonic()
    await upload(up_digest, local, server.url, token=TOKEN, streams=4, bandwidth=2 * MiB)
    assert time.monotonic() - started >= 0.15


async def test_zstd_moves_fewer_bytes_both_ways(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = b"row,1,2,3,stageflow\n" * 100_000
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    local = make_store("local")
    down = TransferStats()
    path = await download(digest, [server.url], local, token=TOKEN, compress=True, stats=down)
    assert path.read_bytes() == data
    assert 0 < down.bytes_received < len(data) // 10

    other = data.replace(b"stageflow", b"uploaded!")
    up_digest = local.put_bytes(other).sha256
    up = TransferStats()
    await upload(up_digest, local, server.url, token=TOKEN, compress=True, stats=up)
    assert server.store.path(up_digest).read_bytes() == other
    assert 0 < up.bytes_sent < len(other) // 10


async def test_downloading_more_than_the_disk_holds(
    small_fs: Path,
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    server = serve(make_store("source"))
    digest = server.store.put_bytes(os.urandom(16 * MiB)).sha256
    local = ContentStore(small_fs / "staging", chunk_size=CHUNK)
    with pytest.raises(DiskFullError, match="no space left"):
        await download(digest, [server.url], local, token=TOKEN)
    assert files_under(local.root / "objects") == []
    assert files_under(local.root / "partial") == []


async def test_uploading_to_a_full_peer_or_over_its_limit(
    small_fs: Path,
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    local = make_store("local")
    digest = local.put_bytes(os.urandom(8 * MiB)).sha256
    full = serve(ContentStore(small_fs / "staging", chunk_size=CHUNK))
    with pytest.raises(DiskFullError, match="has no room"):
        await upload(digest, local, full.url, token=TOKEN)
    assert files_under(small_fs / "staging") == []
    limited = serve(make_store("limited"), max_upload_bytes=MiB)
    with pytest.raises(PeerRejectedError, match="413"):
        await upload(digest, local, limited.url, token=TOKEN)


async def test_two_downloads_of_one_object_fetch_it_once(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(CHUNK * 20)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    local = make_store("local")
    stats = TransferStats()
    paths = await asyncio.gather(
        *(download(digest, [server.url], local, token=TOKEN, stats=stats) for _ in range(2))
    )
    assert paths[0] == paths[1] and paths[0].read_bytes() == data
    assert stats.bytes_received == len(data)
    no_leftovers(local)


async def test_memory_stays_flat_however_large_the_object(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    """Server and client both run in this process: tracemalloc sees every buffer of both."""
    size = 16 * MiB
    server = serve(make_store("source"))
    with open(server.store.tmp_dir / "big", "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    digest = server.store.put_file(server.store.tmp_dir / "big").sha256
    local = make_store("local")
    tracemalloc.start()
    try:
        await download(digest, [server.url], local, token=TOKEN, streams=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert local.has(digest)
    assert peak < size / 4, f"peak {peak / MiB:.1f} MiB while moving {size // MiB} MiB"
