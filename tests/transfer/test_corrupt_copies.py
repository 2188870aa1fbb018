"""Corrupt stored copies heal themselves: real servers on loopback, real bytes flipped on disk
(or on the wire, through a real TCP proxy), the verify endpoint, quarantine and its limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable

import httpx
import pytest
from dataplane_server import (  # noqa: F401  (fixtures)
    CHUNK,
    TOKEN,
    ServeFactory,
    files_under,
    make_store_fixture,
    serve_fixture,
)
from tcp_proxy import TcpProxy

from stageflow.errors import IntegrityError, TransferError
from stageflow.transfer.gc import collect_garbage
from stageflow.transfer.http_client import TransferStats, download
from stageflow.transfer.store import ContentStore

MakeStore = Callable[..., ContentStore]
CHUNKS = 16
BAD = 6  # the chunk flipped on disk
OVERHEAD = 1024  # request line, headers and status line of one request, generously


def corrupt(store: ContentStore, digest: str, chunk: int) -> bytes:
    """Flip 8 bytes inside ``chunk`` of the stored object, as a failing disk would; returns
    the object's bytes as they now are on disk."""
    path = store.path(digest)
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(chunk * CHUNK + 100)
        original = f.read(8)
        f.seek(chunk * CHUNK + 100)
        f.write(bytes(b ^ 0xFF for b in original))
    return path.read_bytes()


def quarantined(store: ContentStore) -> list[str]:
    return files_under(store.root / "quarantine")


def proxy_url(proxy: TcpProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


async def test_a_corrupt_copy_is_quarantined_and_the_rest_comes_from_another_location(
    make_store: MakeStore, serve: ServeFactory
) -> None:
    data = os.urandom(CHUNK * CHUNKS)
    bad, good = serve(make_store("bad")), serve(make_store("good"))
    digest = bad.store.put_bytes(data).sha256
    good.store.put_bytes(data)
    rotten = corrupt(bad.store, digest, BAD)
    local, stats = make_store("local"), TransferStats()
    async with TcpProxy(bad.port) as to_bad, TcpProxy(good.port) as to_good:
        path = await download(
            digest, [proxy_url(to_bad), proxy_url(to_good)], local, token=TOKEN, streams=1,
            stats=stats,
        )  # fmt: skip
    assert path.read_bytes() == data
    # the bad location quarantined its copy: moved with its chunk manifest, no longer served
    assert not bad.store.has(digest)
    held = quarantined(bad.store)
    assert len(held) == 2 and held[0].endswith(digest) and held[1] == f"{held[0]}.chunks"
    assert (bad.store.root / "quarantine" / held[0]).read_bytes() == rotten
    assert bad.store.status().quarantined == 1
    assert good.store.has(digest) and quarantined(good.store) == []
    assert stats.copies_quarantined == 1 and stats.chunks_refetched == 0
    # chunks 0..BAD came from the bad location (the last one wrong), the rest from the good
    # one: nothing verified was sent again (counted on the wire, not by the client)
    assert to_bad.bytes_forwarded <= (BAD + 1) * CHUNK + (BAD + 3) * OVERHEAD
    rest = (CHUNKS - BAD) * CHUNK
    assert rest <= to_good.bytes_forwarded <= rest + (CHUNKS - BAD) * OVERHEAD


async def test_the_only_copy_corrupt_is_no_longer_served_anywhere(
    make_store: MakeStore, serve: ServeFactory
) -> None:
    data = os.urandom(CHUNK * CHUNKS)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256
    corrupt(server.store, digest, BAD)
    local = make_store("local")
    with pytest.raises(TransferError, match="no longer served anywhere") as caught:
        await download(digest, [server.url], local, token=TOKEN, streams=1)
    assert type(caught.value) is TransferError, "retryable, so that a retry makes it again"
    assert digest in str(caught.value) and "quarantined" in str(caught.value)
    assert not server.store.has(digest) and len(quarantined(server.store)) == 2
    assert not local.has(digest)
    with pytest.raises(TransferError, match=f"object {digest} is no longer served anywhere"):
        await download(digest, [server.url], local, token=TOKEN)  # a later attempt: 404

    # the producer makes it again: the fetch resumes, keeping the chunks already verified
    server.store.put_bytes(data)
    stats = TransferStats()
    path = await download(digest, [server.url], local, token=TOKEN, streams=1, stats=stats)
    assert path.read_bytes() == data
    assert (stats.chunks_reused, stats.chunks_transferred) == (BAD, CHUNKS - BAD)


async def test_verify_endpoint(make_store: MakeStore, serve: ServeFactory) -> None:
    server = serve(make_store("source"))
    data = os.urandom(CHUNK * 3 + 7)
    digest = server.store.put_bytes(data).sha256
    before = files_under(server.store.root)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        url = f"/v1/objects/{digest}/verify"
        assert (await client.post(url)).status_code == 401
        wrong = await client.post(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        intact = await client.post(url, headers=auth)
        assert intact.status_code == 200
        assert intact.json() == {"sha256": digest, "intact": True, "quarantined": False}
        assert files_under(server.store.root) == before and server.store.has(digest)

        unknown = hashlib.sha256(b"never stored").hexdigest()
        missing = await client.post(f"/v1/objects/{unknown}/verify", headers=auth)
        assert missing.status_code == 404 and "no object" in missing.json()["error"]
        malformed = await client.post("/v1/objects/..%2Fetc/verify", headers=auth)
        assert malformed.status_code in (400, 404)

        corrupt(server.store, digest, 1)  # an intact answer is not kept past a change
        answers = await asyncio.gather(*(client.post(url, headers=auth) for _ in range(2)))
        found = [a.json() for a in answers if a.status_code == 200]
        assert {"sha256": digest, "intact": False, "quarantined": True} in found
        assert all(a.status_code in (200, 404) for a in answers)
        assert (await client.post(url, headers=auth)).status_code == 404
    assert not server.store.has(digest)
    assert server.store.status().to_dict()["quarantined"] == 1


def test_gc_leaves_the_quarantine_alone(make_store: MakeStore) -> None:
    store = make_store("store")
    digest = store.put_bytes(os.urandom(CHUNK)).sha256
    corrupt(store, digest, 0)
    assert not store.verify(digest)
    moved = store.quarantine(digest)
    assert moved is not None and moved.parent == store.root / "quarantine"
    assert store.quarantine(digest) is None, "nothing left to move"
    report = collect_garbage(store, ttl=0, now=moved.stat().st_mtime + 10**6)
    assert report.removed_objects == 0
    assert quarantined(store) == [moved.name, f"{moved.name}.chunks"]
    assert store.status().quarantined == 1


class FlippingProxy(TcpProxy):
    """A TcpProxy that flips the last byte of the first ``flips`` large reads it forwards
    towards the client: chunk bodies go wrong on the wire while the disk stays intact."""

    def __init__(self, target_port: int, *, flips: int) -> None:
        super().__init__(target_port)
        self.flips = flips

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, carried: list[int]
    ) -> None:
        if writer.get_extra_info("sockname")[1] == self.port:  # server → client
            reader = _Flipping(reader, self)  # type: ignore[assignment]
        await super()._pump(reader, writer, carried)


class _Flipping:
    def __init__(self, reader: asyncio.StreamReader, proxy: FlippingProxy) -> None:
        self.reader, self.proxy = reader, proxy

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(n)
        if self.proxy.flips > 0 and len(data) >= 4096:  # a body: headers are far shorter
            self.proxy.flips -= 1
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        return data


async def test_wire_corruption_keeps_the_strikes(
    make_store: MakeStore, serve: ServeFactory
) -> None:
    data = os.urandom(CHUNK * 4)
    server = serve(make_store("source"))
    digest = server.store.put_bytes(data).sha256

    stats = TransferStats()
    async with FlippingProxy(server.port, flips=1) as proxy:
        path = await download(
            digest, [proxy_url(proxy)], make_store("once"), token=TOKEN, streams=1, stats=stats
        )
    assert proxy.flips == 0 and path.read_bytes() == data
    assert stats.chunks_refetched == 1 and stats.copies_quarantined == 0

    stats = TransferStats()
    async with FlippingProxy(server.port, flips=10**6) as proxy:
        with pytest.raises(IntegrityError, match=r"chunk 0 .* arrived wrong 3 times"):
            await download(
                digest, [proxy_url(proxy)], make_store("always"), token=TOKEN, streams=1,
                stats=stats,
            )  # fmt: skip
    assert stats.chunks_refetched == 2 and stats.copies_quarantined == 0
    assert server.store.has(digest) and quarantined(server.store) == []
    assert server.store.path(digest).read_bytes() == data
