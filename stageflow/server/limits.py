"""Request hygiene for the JSON API, applied before any handler runs.

API bodies are small by contract (log batches are at most 1 MiB), so they are read whole, up
to ``max_bytes``, and refused with 413 beyond it, whatever the client declares. Values the
control DB cannot store are refused with 422 up front: NUL characters (PostgreSQL text and
JSONB reject them) in the body, path or query. The data plane's ``/v1`` uploads are not
touched: they stream chunks of many MiB.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_MAX_BODY_BYTES", "ApiRequestLimits"]

API_MAX_BODY_BYTES = 1 << 20


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiRequestLimits:
    def __init__(self, app: ASGIApp, *, prefix: str = "/api/", max_bytes: int = API_MAX_BODY_BYTES):
        self.app = app
        self.prefix = prefix
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        raw_target = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        if scope["type"] == "http" and (b"%00" in raw_target or "\x00" in scope["path"]):
            await _answer(send, 422, "NUL characters are not allowed in paths or queries")
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, 413, self._too_big())
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, 413, self._too_big())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\\u0000" in body or b"\x00" in body:
            await _answer(send, 422, "NUL characters (\\u0000) are not allowed in API requests")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return (
            f"request body over {self.max_bytes} bytes: split it (log batches: at most 1,000 "
            "lines and 1 MiB)"
        )
