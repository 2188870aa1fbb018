"""The data-plane HTTP protocol, spoken by hand to a real uvicorn server."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from dataplane_server import (  # noqa: F401  (fixtures)
    CHUNK,
    TOKEN,
    DataServer,
    ServeFactory,
    files_under,
    make_store_fixture,
    serve_fixture,
    small_fs_fixture,
    start_server,
)

from stageflow.transfer.store import ContentStore

MakeStore = Callable[..., ContentStore]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(make_store: MakeStore, serve: ServeFactory) -> DataServer:
    return serve(make_store("server"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataServer]:
    """One server for the many read-only parametrized cases, to keep the suite fast."""
    server = start_server(ContentStore(tmp_path_factory.mktemp("shared"), chunk_size=CHUNK))
    yield server
    server.stop()


def client(server: DataServer, *, auth: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=AUTH if auth else {}, trust_env=False)


def raw_request(port: int, method: str, target: str, headers: dict[str, str]) -> int:
    """Send a request line exactly as written (no URL normalisation); return the status."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = sock.recv(4096).decode("latin-1")
    return int(reply.split(" ", 2)[1])


async def test_healthz_needs_no_token_but_everything_else_does(served: DataServer) -> None:
    digest = served.store.put_bytes(b"payload").sha256
    async with client(served, auth=False) as http:
        assert (await http.get("/v1/healthz")).json() == {"ok": True}
        for method, path in [
            ("GET", f"/v1/objects/{digest}"),
            ("HEAD", f"/v1/objects/{digest}"),
            ("GET", f"/v1/objects/{digest}/chunks"),
            ("POST", "/v1/uploads"),
            ("GET", f"/v1/uploads/{digest}"),
            ("GET", "/v1/staging/status"),
        ]:
            missing = await http.request(method, path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await http.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403, path
            if method != "HEAD":
                assert "token" in wrong.json()["error"]
        basic = await http.get("/v1/staging/status", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401


async def test_head_get_and_chunk_manifest(served: DataServer) -> None:
    data = os.urandom(CHUNK * 2 + 10)
    digest = served.store.put_bytes(data).sha256
    async with client(served) as http:
        head = await http.head(f"/v1/objects/{digest}")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        assert head.headers["accept-ranges"] == "bytes"
        got = await http.get(f"/v1/objects/{digest}", headers={"Accept-Encoding": "identity"})
        assert got.status_code == 200 and got.content == data
        manifest = (await http.get(f"/v1/objects/{digest}/chunks")).json()
        assert manifest["sha256"] == digest and manifest["chunk_size"] == CHUNK
        assert manifest["chunks"][2] == sha(data[2 * CHUNK :])
        absent = sha(b"absent")
        for method in ("HEAD", "GET"):
            assert (await http.request(method, f"/v1/objects/{absent}")).status_code == 404
        missing = await http.get(f"/v1/objects/{absent}/chunks")
        assert missing.status_code == 404 and "another location" in missing.json()["error"]


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=0-0", 206, (0, 0)),
        ("bytes=0-99", 206, (0, 99)),
        ("bytes=10-19", 206, (10, 19)),
        ("bytes=95-", 206, (95, 99)),
        ("bytes=-5", 206, (95, 99)),
        ("bytes=-500", 206, (0, 99)),
        ("bytes=90-1000", 206, (90, 99)),
        ("bytes=99-99", 206, (99, 99)),
        ("bytes=100-", 416, None),
        ("bytes=100-200", 416, None),
        ("bytes=20-10", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=0-1,5-6", 416, None),
        ("bytes=-", 416, None),
        ("items=0-1", 416, None),
        ("bytes=abc", 416, None),
    ],
)
async def test_range_edge_cases(
    shared: DataServer, header: str, status: int, span: tuple[int, int] | None
) -> None:
    data = bytes(range(100))
    digest = shared.store.put_bytes(data).sha256
    async with client(shared) as http:
        got = await http.get(
            f"/v1/objects/{digest}", headers={"Range": header, "Accept-Encoding": "identity"}
        )
    assert got.status_code == status, got.text
    if span is None:
        assert got.headers["content-range"] == "bytes */100"
        assert got.json()["error"]
    else:
        first, last = span
        assert got.headers["content-range"] == f"bytes {first}-{last}/100"
        assert got.content == data[first : last + 1]
        assert got.headers["content-length"] == str(last - first + 1)


async def test_any_range_of_an_empty_object_is_unsatisfiable(served: DataServer) -> None:
    digest = served.store.put_bytes(b"").sha256
    async with client(served) as http:
        assert (await http.get(f"/v1/objects/{digest}")).content == b""
        got = await http.get(f"/v1/objects/{digest}", headers={"Range": "bytes=0-"})
        assert got.status_code == 416


async def test_zstd_bodies_whole_and_ranged(served: DataServer) -> None:
    data = b"stageflow compresses well. " * 40_000
    digest = served.store.put_bytes(data).sha256
    async with client(served) as http:
        async with http.stream(
            "GET", f"/v1/objects/{digest}", headers={"Accept-Encoding": "zstd"}
        ) as response:
            assert response.headers["content-encoding"] == "zstd"
            raw = b"".join([part async for part in response.aiter_raw()])
        assert len(raw) < len(data) // 20
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == data
        async with http.stream(
            "GET",
            f"/v1/objects/{digest}",
            headers={"Accept-Encoding": "gzip, zstd;q=0.5", "Range": "bytes=1000-300999"},
        ) as response:
            assert response.status_code == 206
            assert response.headers["content-range"] == f"bytes 1000-300999/{len(data)}"
            raw = b"".join([part async for part in response.aiter_raw()])
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == data[1000:301000]
        refused = await http.get(f"/v1/objects/{digest}", headers={"Accept-Encoding": "zstd;q=0"})
        assert "content-encoding" not in refused.headers and refused.content == data


@pytest.mark.parametrize(
    "target",
    [
        "/v1/objects/../../etc/passwd",
        "/v1/objects/..%2F..%2Fetc%2Fpasswd",
        "/v1/objects/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/objects/..",
        "/v1/objects/%2E%2E",
        "/v1/objects//etc/passwd",
        "/v1/objects/%2Fetc%2Fpasswd",
        "/v1/objects/%2Fetc%2Fpasswd/chunks",
        "/v1/objects/..%2F..%2Fcanary/chunks",
        "/v1/uploads/..%2F..%2Fcanary",
        "/v1/objects/" + "0" * 64 + "%00",
        "/v1/objects/" + "A" * 64,
        "//etc/passwd",
        "/v1/../../../../etc/passwd",
    ],
)
async def test_traversal_attempts_are_refused_and_touch_nothing(
    shared: DataServer, target: str
) -> None:
    canary = shared.store.root.parent / "canary"
    canary.write_bytes(b"do not touch")
    shared.store.put_bytes(b"something stored")
    before = files_under(shared.store.root)
    for method in ("GET", "HEAD", "PUT", "POST"):
        status = raw_request(shared.port, method, target, {**AUTH, "Content-Length": "0"})
        assert 400 <= status < 500, (method, target, status)
    assert files_under(shared.store.root) == before
    assert canary.read_bytes() == b"do not touch"


async def test_malformed_shas_are_400_with_a_clear_error(served: DataServer) -> None:
    async with client(served) as http:
        for bad in ("abc", "A" * 64, "0" * 63 + "g", ".." + "0" * 62):
            got = await http.get(f"/v1/objects/{bad}")
            assert got.status_code == 400
            assert "64 lowercase hex" in got.json()["error"]
        post = await http.post(
            "/v1/uploads", json={"sha256": "../../x", "size": 1, "chunk_size": 4096}
        )
        assert post.status_code == 400
        unknown = await http.get("/v1/nothing-here")
        assert unknown.status_code == 404 and "error" in unknown.json()
    assert files_under(served.store.root / "partial") == []


async def begin(http: httpx.AsyncClient, data: bytes, chunk: int = CHUNK) -> httpx.Response:
    body = {"sha256": sha(data), "size": len(data), "chunk_size": chunk}
    return await http.post("/v1/uploads", json=body)


async def put(
    http: httpx.AsyncClient, data: bytes, index: int, chunk: int = CHUNK, claim: str | None = None
) -> httpx.Response:
    part = data[index * chunk : (index + 1) * chunk]
    return await http.put(
        f"/v1/uploads/{sha(data)}/chunks/{index}",
        content=part,
        headers={"X-Chunk-Sha256": claim or sha(part)},
    )


async def test_upload_protocol_and_resume_after_a_server_restart(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    data = os.urandom(CHUNK * 3 + 100)
    digest = sha(data)
    store = make_store("server")
    first = serve(store)
    async with client(first) as http:
        assert (await begin(http, data)).json() == {"received": [], "complete": False}
        assert (await put(http, data, 0)).status_code == 200
        assert (await put(http, data, 2)).status_code == 200
        commit = await http.post(f"/v1/uploads/{digest}/commit")
        assert commit.status_code == 409 and "not received" in commit.json()["error"]
    first.stop()

    second = serve(store)  # a new server process state over the same staging dir
    async with client(second) as http:
        assert (await http.get(f"/v1/uploads/{digest}")).json()["received"] == [0, 2]
        assert (await begin(http, data)).json() == {"received": [0, 2], "complete": False}
        assert (await put(http, data, 1)).status_code == 200
        assert (await put(http, data, 3)).status_code == 200
        commit = await http.post(f"/v1/uploads/{digest}/commit")
        assert commit.status_code == 200 and commit.json() == {"sha256": digest, "size": len(data)}
        assert (await begin(http, data)).json()["complete"] is True
    assert store.path(digest).read_bytes() == data
    assert files_under(store.root / "partial") == []


async def test_upload_chunk_checks(served: DataServer) -> None:
    data = os.urandom(CHUNK * 2)
    digest = sha(data)
    async with client(served) as http:
        not_started = await put(http, data, 0)
        assert not_started.status_code == 404 and "POST /v1/uploads" in not_started.json()["error"]
        await begin(http, data)
        corrupt = await put(http, data, 0, claim=sha(b"something else"))
        assert corrupt.status_code == 422 and "send it again" in corrupt.json()["error"]
        assert (await http.get(f"/v1/uploads/{digest}")).json()["received"] == []
        no_header = await http.put(f"/v1/uploads/{digest}/chunks/0", content=data[:CHUNK])
        assert no_header.status_code == 400
        out_of_range = await put(http, data, 5)
        assert out_of_range.status_code == 400
        short = await http.put(
            f"/v1/uploads/{digest}/chunks/0",
            content=data[:100],
            headers={"X-Chunk-Sha256": sha(data[:100])},
        )
        assert short.status_code == 400 and f"must be {CHUNK} bytes" in short.json()["error"]
        bomb = zstandard.ZstdCompressor().compress(b"\0" * (CHUNK * 64))
        exploded = await http.put(
            f"/v1/uploads/{digest}/chunks/0",
            content=bomb,
            headers={"X-Chunk-Sha256": sha(data[:CHUNK]), "Content-Encoding": "zstd"},
        )
        assert exploded.status_code == 400 and "more than" in exploded.json()["error"]
        packed = zstandard.ZstdCompressor().compress(data[:CHUNK])
        ok = await http.put(
            f"/v1/uploads/{digest}/chunks/0",
            content=packed,
            headers={"X-Chunk-Sha256": sha(data[:CHUNK]), "Content-Encoding": "zstd"},
        )
        assert ok.status_code == 200
        too_big = await begin(http, data, chunk=1)
        assert too_big.status_code == 400 and "chunk_size" in too_big.json()["error"]


async def test_commit_hashes_the_whole_file_and_discards_a_bad_upload(served: DataServer) -> None:
    """A client that lies consistently (chunks match their claims) still cannot plant bytes."""
    data = os.urandom(CHUNK * 2)
    impostor = os.urandom(CHUNK * 2)
    digest = sha(data)
    async with client(served) as http:
        await begin(http, data)
        for index in (0, 1):
            part = impostor[index * CHUNK : (index + 1) * CHUNK]
            response = await http.put(
                f"/v1/uploads/{digest}/chunks/{index}",
                content=part,
                headers={"X-Chunk-Sha256": sha(part)},
            )
            assert response.status_code == 200
        commit = await http.post(f"/v1/uploads/{digest}/commit")
        assert commit.status_code == 422 and "discarded" in commit.json()["error"]
        assert (await http.get(f"/v1/uploads/{digest}")).status_code == 404
    assert not served.store.has(digest)
    assert files_under(served.store.root / "objects") == []
    assert files_under(served.store.root / "partial") == []


async def test_upload_size_limit_and_read_only_servers(
    make_store: MakeStore,
    serve: ServeFactory,
) -> None:
    limited = serve(make_store("limited"), max_upload_bytes=CHUNK)
    async with client(limited) as http:
        over = await begin(http, os.urandom(CHUNK + 1))
        assert over.status_code == 413 and "at most" in over.json()["error"]
        huge_body = await http.post(
            "/v1/uploads", content=b"{" + b" " * 100_000 + b"}", headers={"Content-Type": "x"}
        )
        assert huge_body.status_code == 413
        assert (await http.post("/v1/uploads", content=b"not json")).status_code == 400
    read_only = serve(make_store("read-only"), accept_uploads=False)
    async with client(read_only) as http:
        refused = await begin(http, b"x" * 10)
        assert refused.status_code == 405 and "does not accept uploads" in refused.json()["error"]
    assert files_under(limited.store.root / "partial") == []


async def test_upload_to_a_full_disk_is_507_and_leaves_nothing(
    small_fs: Path,
    serve: ServeFactory,
) -> None:
    server = serve(ContentStore(small_fs / "staging", chunk_size=CHUNK))
    async with client(server) as http:
        body = {"sha256": sha(b"big"), "size": 16 * 1024 * 1024, "chunk_size": CHUNK}
        full = await http.post("/v1/uploads", json=body)
    assert full.status_code == 507
    assert "no space left" in full.json()["error"]
    assert files_under(small_fs / "staging") == []


async def test_staging_status(served: DataServer) -> None:
    served.store.put_bytes(b"abc")
    (served.store.root / "inputs" / "r" / "s").mkdir(parents=True)
    async with client(served) as http:
        status = (await http.get("/v1/staging/status")).json()
    assert status["objects"] == 1 and status["object_bytes"] == 3
    assert status["inputs"] == 1 and status["outputs"] == 0
    assert status["disk_total"] >= status["disk_used"] > 0 and status["disk_free"] > 0
    assert json.dumps(status)
