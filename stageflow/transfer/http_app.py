"""The data plane's HTTP side: objects, chunk manifests and resumable uploads under ``/v1``.

``data_router`` is an APIRouter, so the control-plane server can mount it beside its own
routes; ``create_data_app`` wraps it in a FastAPI app for a worker or the data server. The
protocol is the table in docs/data-plane.md. What the code guarantees:

* every route but ``/v1/healthz`` checks the bearer token first (401 missing, 403 wrong),
  except an outside service's ``POST /v1/callbacks/{id}``, whose unguessable id is its
  capability (stageflow/transfer/callbacks.py);
* a ``sha`` is validated (400) before any path is built, so no request names a file outside
  the store; unknown paths are 404;
* object bodies are streamed from disk a block at a time (constant memory, any size), with
  single ``Range`` support and optional zstd;
* request bodies are read with a hard cap, and upload sizes are bounded (413);
* ``POST /v1/objects/{sha}/verify`` re-hashes a stored object that a client saw served wrong
  and quarantines it when it is corrupt, so the copy stops being served without an operator;
  one verification runs at a time per object (callers share its answer) and an intact answer
  is remembered while the file is unchanged, so no client can keep the server hashing;
* errors are JSON ``{"error": "..."}`` with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from stageflow.errors import DiskFullError, IntegrityError
from stageflow.transfer.auth import check_bearer
from stageflow.transfer.encoding import (
    RangeNotSatisfiable,
    accepts_zstd,
    compressor,
    decompress_bounded,
    parse_range,
)
from stageflow.transfer.manifest import validate_sha
from stageflow.transfer.store import ContentStore
from stageflow.transfer.uploads import UploadError, Uploads

__all__ = ["create_data_app", "data_router"]

log = logging.getLogger(__name__)

_BLOCK = 1024 * 1024
_MAX_JSON_BODY = 64 * 1024
_INTACT_TTL = 60.0
"""Seconds an object found intact is not hashed again (while its file is unchanged)."""


class ApiError(Exception):
    """Raised anywhere in a handler; becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _DataRoute(APIRoute):
    """Turns our errors into JSON responses inside the route, so any app can mount the router."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return _error(exc.status, str(exc), exc.headers)
            except UploadError as exc:
                return _error(exc.status, str(exc))
            except DiskFullError as exc:
                return _error(507, str(exc))
            except IntegrityError as exc:
                return _error(422, str(exc))
            except FileNotFoundError as exc:  # e.g. an upload discarded under our feet
                return _error(404, str(exc))
            except RequestValidationError as exc:
                return _error(400, f"malformed request: {exc.errors()!s:.300}")

        return handle


def _sha(value: str) -> str:
    try:
        return validate_sha(value)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) to hold more than ``limit`` bytes of it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise ApiError(413, f"request body exceeds the {limit}-byte limit")
    except ClientDisconnect:
        raise ApiError(400, "the client went away before sending the whole body") from None
    return bytes(body)


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "body must be a JSON object")
    return doc


def _int_field(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApiError(400, f"{key!r} must be a non-negative integer, got {value!r:.40}")
    return value


async def _stream_file(
    path: os.PathLike[str], first: int, length: int, zstd: bool
) -> AsyncIterator[bytes]:
    """Read ``length`` bytes from ``first`` a block at a time, compressing if asked.

    The file is opened here, not by the handler, so a client that disconnects before the
    body starts leaves no descriptor behind.
    """
    fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    packer = compressor() if zstd else None
    try:
        offset, end = first, first + length
        while offset < end:
            block = await anyio.to_thread.run_sync(os.pread, fd, min(_BLOCK, end - offset), offset)
            if not block:
                raise OSError(f"{path} is shorter than expected")
            offset += len(block)
            if packer is None:
                yield block
            else:
                packed = await anyio.to_thread.run_sync(packer.compress, block)
                if packed:
                    yield packed
        if packer is not None:
            yield packer.flush()
    finally:
        os.close(fd)


class _Verifier:
    """``store.verify`` behind a single flight per object and a memory of intact answers."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.running: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.intact: dict[str, tuple[tuple[int, ...], float]] = {}

    def _signature(self, sha: str) -> tuple[int, ...]:
        st = self.store.path(sha).stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _check(self, sha: str) -> dict[str, Any]:
        signature = self._signature(sha)
        remembered = self.intact.get(sha)
        if remembered is not None and remembered[0] == signature and remembered[1] > time.time():
            return {"sha256": sha, "intact": True, "quarantined": False}
        if self.store.verify(sha):
            now = time.time()
            self.intact = {k: v for k, v in self.intact.items() if v[1] > now}
            self.intact[sha] = (signature, now + _INTACT_TTL)
            return {"sha256": sha, "intact": True, "quarantined": False}
        moved = self.store.quarantine(sha)
        log.warning("object %s is corrupt: quarantined at %s", sha, moved)
        return {"sha256": sha, "intact": False, "quarantined": moved is not None}

    async def verify(self, sha: str) -> dict[str, Any]:
        task = self.running.get(sha)
        if task is None:
            task = asyncio.create_task(anyio.to_thread.run_sync(self._check, sha))
            self.running[sha] = task
            task.add_done_callback(lambda _: self.running.pop(sha, None))
        return await asyncio.shield(task)  # a caller going away leaves the hash to finish


def data_router(
    store: ContentStore,
    *,
    token: str,
    max_upload_bytes: int,
    accept_uploads: bool = True,
    lake_dir: Path | None = None,
) -> APIRouter:
    """The ``/v1`` data-plane routes over ``store``, guarded by the bearer ``token``.

    A data server (``accept_uploads``) given a ``lake_dir`` also serves the lake under
    ``/v1/lake`` (stageflow/lake/api.py), behind the same token.
    """
    if not token:
        raise ValueError("the data plane needs a token: see stageflow.transfer.auth")
    uploads = Uploads(store, max_bytes=max_upload_bytes)
    verifier = _Verifier(store)

    def authorize(request: Request) -> None:
        verdict = check_bearer(request.headers.get("authorization"), token)
        if verdict == "missing":
            raise ApiError(
                401,
                "missing bearer token: send `Authorization: Bearer <token>` with the "
                "deployment's token (STAGEFLOW_TOKEN, or the token file under STAGEFLOW_HOME)",
                {"WWW-Authenticate": "Bearer"},
            )
        if verdict == "wrong":
            raise ApiError(
                403, "wrong token: use the deployment's STAGEFLOW_TOKEN (or its token file)"
            )

    public = APIRouter(prefix="/v1", route_class=_DataRoute)
    guarded = APIRouter(route_class=_DataRoute, dependencies=[Depends(authorize)])

    @public.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    def _object_headers(sha: str, size: int) -> dict[str, str]:
        return {
            "Accept-Ranges": "bytes",
            "ETag": f'"{sha}"',
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        }

    def _stat(sha: str) -> int:
        try:
            return store.info(sha).size
        except FileNotFoundError:
            raise ApiError(404, f"no object {sha} here: try another location") from None

    @guarded.head("/objects/{sha}")
    async def head_object(sha: str) -> Response:
        sha = _sha(sha)
        return Response(status_code=200, headers=_object_headers(sha, _stat(sha)))

    @guarded.get("/objects/{sha}")
    async def get_object(sha: str, request: Request) -> Response:
        sha = _sha(sha)
        size = _stat(sha)
        try:
            span = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable as exc:
            raise ApiError(416, str(exc), {"Content-Range": f"bytes */{size}"}) from None
        first, last = span if span is not None else (0, size - 1)
        length = last - first + 1
        headers = _object_headers(sha, length)
        headers["Vary"] = "Accept-Encoding"
        if span is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        zstd = accepts_zstd(request.headers.get("accept-encoding"))
        if zstd:
            del headers["Content-Length"]
            headers["Content-Encoding"] = "zstd"
        return StreamingResponse(
            _stream_file(store.path(sha), first, length, zstd),
            status_code=206 if span is not None else 200,
            headers=headers,
        )

    @guarded.get("/objects/{sha}/chunks")
    async def get_chunks(sha: str) -> Response:
        sha = _sha(sha)
        _stat(sha)
        try:
            manifest = await anyio.to_thread.run_sync(store.chunk_manifest, sha)
        except FileNotFoundError:
            raise ApiError(404, f"no object {sha} here: try another location") from None
        return Response(manifest.to_json(), media_type="application/json")

    @guarded.post("/objects/{sha}/verify")
    async def verify_object(sha: str) -> dict[str, Any]:
        sha = _sha(sha)
        _stat(sha)
        return await verifier.verify(sha)

    def _uploads_allowed() -> None:
        if not accept_uploads:
            raise ApiError(405, "this stageflow process does not accept uploads")

    @guarded.post("/uploads")
    async def start_upload(request: Request) -> dict[str, Any]:
        _uploads_allowed()
        doc = _json_body(await _read_body(request, _MAX_JSON_BODY))
        sha = _sha(doc.get("sha256"))  # type: ignore[arg-type]
        size, chunk_size = _int_field(doc, "size"), _int_field(doc, "chunk_size")
        received, complete = await anyio.to_thread.run_sync(uploads.begin, sha, size, chunk_size)
        return {"received": received, "complete": complete}

    @guarded.put("/uploads/{sha}/chunks/{index}")
    async def put_chunk(sha: str, index: str, request: Request) -> dict[str, Any]:
        _uploads_allowed()
        sha = _sha(sha)
        if not index.isdigit() or len(index) > 12:
            raise ApiError(400, f"chunk index must be a non-negative integer, got {index!r:.20}")
        claimed = request.headers.get("x-chunk-sha256", "")
        try:
            validate_sha(claimed)
        except ValueError:
            raise ApiError(400, "X-Chunk-Sha256 must hold the chunk's sha256 (64 hex)") from None
        state = await anyio.to_thread.run_sync(uploads.state, sha)
        if not 0 <= int(index) < state.count:
            raise ApiError(400, f"chunk index {index} out of range 0..{state.count - 1}")
        expected = state.span(int(index))[1]
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "zstd"):
            raise ApiError(415, f"Content-Encoding {encoding!r:.30}: send identity or zstd")
        body = await _read_body(request, expected + expected // 64 + 4096)
        if encoding == "zstd":
            try:
                body = bytes(decompress_bounded(body, expected))
            except ValueError as exc:
                raise ApiError(400, f"chunk {index}: {exc}") from None
        await anyio.to_thread.run_sync(uploads.put_chunk, sha, int(index), body, claimed)
        return {"received": int(index)}

    @guarded.get("/uploads/{sha}")
    async def upload_status(sha: str) -> dict[str, Any]:
        _uploads_allowed()
        sha = _sha(sha)
        if store.has(sha):
            info = store.info(sha)
            return {"received": [], "complete": True, "size": info.size}
        state = await anyio.to_thread.run_sync(uploads.state, sha)
        return {"received": sorted(state.received), "complete": False}

    @guarded.post("/uploads/{sha}/commit")
    async def commit_upload(sha: str) -> dict[str, Any]:
        _uploads_allowed()
        sha = _sha(sha)
        info = await anyio.to_thread.run_sync(uploads.commit, sha)
        return {"sha256": info.sha256, "size": info.size}

    @guarded.get("/staging/status")
    async def staging_status() -> dict[str, Any]:
        status = await anyio.to_thread.run_sync(store.status)
        return status.to_dict()

    if accept_uploads and lake_dir is not None:
        from stageflow.lake.api import lake_router  # it builds on this module

        guarded.include_router(lake_router(store, lake_dir))
    public.include_router(guarded)
    if accept_uploads:  # the data server: it also takes callbacks for `external` stages
        from stageflow.transfer.callbacks import callback_router  # it builds on this module

        public.include_router(callback_router(store.root / "callbacks", token))
    return public


def create_data_app(
    store: ContentStore,
    *,
    token: str,
    max_upload_bytes: int,
    accept_uploads: bool = True,
    lake_dir: Path | None = None,
) -> FastAPI:
    """A FastAPI app serving only the data plane (no docs pages, JSON errors everywhere)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(
        data_router(
            store,
            token=token,
            max_upload_bytes=max_upload_bytes,
            accept_uploads=accept_uploads,
            lake_dir=lake_dir,
        )
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(400, f"malformed request: {exc.errors()!s:.300}")

    return app
