"""Callbacks from outside services: how an ``external`` stage learns that its job is done.

An ``external`` stage registers a callback here (bearer token), hands the outside service the
URL ``/v1/callbacks/<id>``, and waits on ``GET /v1/callbacks/<id>``. The service answers with
``POST /v1/callbacks/<id>`` and a JSON body: it holds no stageflow token, so the id itself is
the capability. That is safe because:

* ids are ``secrets.token_urlsafe(32)`` (256 random bits) and only ever looked up by their
  sha256, so the disk holds no usable id and lookups take no id-dependent time;
* only a registered, pending, unexpired id is accepted: unknown → 404, already completed →
  409 (the first answer wins, atomically, even across processes), expired → 410;
* bodies are bounded (64 KiB → 413) and must be JSON.

Records live as files under the data server's directory (``<store>/callbacks/<sha256(id)>``),
written atomically (temp file, fsync, rename; the completion with ``os.link`` so exactly one
answer lands), so a restarted data server still accepts a pending callback. Records are removed
a day after they expire or complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

from stageflow.transfer._fs import fsync_dir
from stageflow.transfer.auth import check_bearer
from stageflow.transfer.http_app import ApiError, _DataRoute, _json_body, _read_body

__all__ = [
    "MAX_CALLBACK_BODY",
    "MAX_CALLBACK_TIMEOUT",
    "CallbackRecords",
    "callback_router",
    "valid_id",
]

MAX_CALLBACK_BODY = 64 * 1024
MAX_CALLBACK_TIMEOUT = 7 * 24 * 3600.0
RETENTION = 24 * 3600.0
"""Seconds a record stays after it expired or completed (a retried stage may still read it)."""
_MAX_WAIT = 25.0
_ID = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


def valid_id(callback_id: str) -> bool:
    """Whether ``callback_id`` has the shape of an id we hand out (checked before any lookup)."""
    return bool(_ID.match(callback_id))


def _key(callback_id: str) -> str:
    """The name a record is filed under: the id's sha256, so the disk holds no usable id."""
    return hashlib.sha256(callback_id.encode()).hexdigest()


class CallbackRecords:
    """The callback records of one directory: register, read, complete, forget."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _paths(self, callback_id: str) -> tuple[Path, Path] | None:
        if not valid_id(callback_id):
            return None
        key = _key(callback_id)
        return self.directory / f"{key}.json", self.directory / f"{key}.result.json"

    def register(self, timeout: float, meta: dict[str, str]) -> tuple[str, float]:
        """A new pending callback that expires ``timeout`` s from now: ``(id, expires_at)``."""
        self.sweep()
        callback_id = secrets.token_urlsafe(32)
        paths = self._paths(callback_id)
        assert paths is not None
        expires_at = time.time() + timeout
        record = {"created_at": time.time(), "expires_at": expires_at, "meta": meta}
        self._write(paths[0], json.dumps(record).encode(), replace=True)
        return callback_id, expires_at

    def read(self, callback_id: str) -> dict[str, Any] | None:
        """``{"state": pending|done|expired, "expires_at", "result"?}``, or None if unknown."""
        paths = self._paths(callback_id)
        if paths is None or not paths[0].exists():
            return None
        record = json.loads(paths[0].read_bytes())
        view: dict[str, Any] = {"state": "pending", "expires_at": record["expires_at"]}
        with contextlib.suppress(FileNotFoundError):
            done = json.loads(paths[1].read_bytes())
            return {**view, "state": "done", **done}
        if time.time() > record["expires_at"]:
            view["state"] = "expired"
        return view

    def complete(self, callback_id: str, result: Any) -> None:
        """Record the answer; ApiError 404/409/410 unless the callback is pending."""
        state = self.read(callback_id)
        if state is None:
            raise ApiError(404, "no such callback: the id is unknown or was removed")
        if state["state"] == "done":
            raise ApiError(409, "this callback was already completed; the first answer stands")
        if state["state"] == "expired":
            raise ApiError(410, "this callback expired: the stage stopped waiting for it")
        paths = self._paths(callback_id)
        assert paths is not None
        body = json.dumps({"result": result, "completed_at": time.time()}).encode()
        if not self._write(paths[1], body, replace=False):
            raise ApiError(409, "this callback was already completed; the first answer stands")

    def sweep(self) -> None:
        """Forget records that expired or completed more than ``RETENTION`` seconds ago."""
        cutoff = time.time() - RETENTION
        for path in self.directory.glob("*.json"):
            if path.name.endswith(".result.json"):
                continue
            try:
                record = json.loads(path.read_bytes())
                result = path.with_name(path.name[: -len(".json")] + ".result.json")
                ended = record["expires_at"]
                if result.exists():
                    ended = min(ended, json.loads(result.read_bytes())["completed_at"])
                if ended < cutoff:
                    result.unlink(missing_ok=True)
                    path.unlink(missing_ok=True)
            except (OSError, ValueError, KeyError):
                continue

    def _write(self, path: Path, data: bytes, *, replace: bool) -> bool:
        """Write ``path`` all at once; with ``replace=False`` only if it does not exist yet."""
        tmp = self.directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            fsync_dir(self.directory)
            return True
        finally:
            tmp.unlink(missing_ok=True)


def callback_router(directory: Path, token: str) -> APIRouter:
    """``/callbacks`` routes (mounted under ``/v1``) keeping their records in ``directory``."""
    records = CallbackRecords(directory)
    wakeups: dict[str, asyncio.Event] = {}

    def authorize(request: Request) -> None:
        verdict = check_bearer(request.headers.get("authorization"), token)
        if verdict == "missing":
            raise ApiError(401, "missing bearer token: send the deployment's STAGEFLOW_TOKEN")
        if verdict == "wrong":
            raise ApiError(403, "wrong token: use the deployment's STAGEFLOW_TOKEN")

    router = APIRouter(route_class=_DataRoute)
    guarded = [Depends(authorize)]

    @router.post("/callbacks", dependencies=guarded)
    async def register(request: Request) -> dict[str, Any]:
        doc = _json_body(await _read_body(request, MAX_CALLBACK_BODY))
        timeout = doc.get("timeout")
        if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_CALLBACK_TIMEOUT:
            raise ApiError(400, f"'timeout' must be seconds in (0, {MAX_CALLBACK_TIMEOUT:.0f}]")
        meta: dict[str, str] = {
            k: str(doc[k])[:200] for k in ("run_id", "pipeline", "stage") if k in doc
        }
        callback_id, expires_at = await anyio.to_thread.run_sync(
            records.register, float(timeout), meta
        )
        return {
            "id": callback_id,
            "path": f"/v1/callbacks/{callback_id}",
            "expires_at": expires_at,
        }

    @router.get("/callbacks/{callback_id}", dependencies=guarded)
    async def read(callback_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The callback's state; ``?wait=s`` holds the request until it completes (long poll)."""
        key = _key(callback_id)
        event = wakeups.setdefault(key, asyncio.Event())  # before reading: no missed wakeup
        state = await anyio.to_thread.run_sync(records.read, callback_id)
        if state is None:
            wakeups.pop(key, None)
            raise ApiError(404, "no such callback: the id is unknown or was removed")
        limit = min(max(wait, 0.0), _MAX_WAIT, max(state["expires_at"] - time.time(), 0.0))
        if state["state"] == "pending" and limit > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), limit)
            state = await anyio.to_thread.run_sync(records.read, callback_id) or state
        if state["state"] != "pending":
            wakeups.pop(key, None)
        return state

    @router.post("/callbacks/{callback_id}")
    async def answer(callback_id: str, request: Request) -> dict[str, Any]:
        """The outside service's answer. No bearer token: the unguessable id is the capability."""
        if not valid_id(callback_id):
            raise ApiError(404, "no such callback: the id is unknown or was removed")
        raw = await _read_body(request, MAX_CALLBACK_BODY)
        try:
            result = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from None
        await anyio.to_thread.run_sync(records.complete, callback_id, result)
        if (event := wakeups.pop(_key(callback_id), None)) is not None:
            event.set()
        return {"ok": True}

    return router
