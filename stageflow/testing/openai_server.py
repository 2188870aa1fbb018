"""A local OpenAI-compatible server: the paid API's real wire protocol, for tests and demos.

``python -m stageflow.testing.openai_server --port 8400 --key local`` serves it until Ctrl-C,
so pipelines with ``llm`` stages (examples/three_queues.yaml) run offline.

``POST /v1/chat/completions`` takes the request JSON the official client sends, checks the
Bearer key, and answers with a real ``chat.completion`` object (choices, finish_reason, usage)
whose content is the last user message in upper case, so tests can check every answer.
Tokens are counted as whitespace-separated words. Faults are injected by request number
(1-based, in arrival order): ``faults={1: 429, 6: 500}``; a 429 carries ``retry-after-ms``.
The server records every request (arrival time, prompt, status) and the most requests it had
in flight at once, which is what the tests assert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stageflow.worker.dataplane import _Server


@dataclass
class Seen:
    number: int
    at: float
    prompt: str
    status: int


@dataclass
class FakeOpenAI:
    key: str
    faults: dict[int, int] = field(default_factory=dict)
    delay: float = 0.02
    retry_after_ms: int = 20
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    _server: _Server | None = None

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def answered(self) -> Counter[str]:
        """How many times each prompt got a 200."""
        return Counter(s.prompt for s in self.seen if s.status == 200)

    def max_in_window(self, seconds: float) -> int:
        """The most requests that arrived within any ``seconds``-long window."""
        times = sorted(s.at for s in self.seen)
        best, first = 0, 0
        for last, t in enumerate(times):
            while t - times[first] > seconds:
                first += 1
            best = max(best, last - first + 1)
        return best

    async def __aenter__(self) -> FakeOpenAI:
        self._server = _Server(self._app(), "127.0.0.1", self.port)
        self.url = f"http://127.0.0.1:{await self._server.start()}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            number = len(self.seen) + 1
            body = await request.json()
            prompt = body["messages"][-1]["content"]
            seen = Seen(number, time.monotonic(), prompt, 200)
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
                if request.headers.get("authorization") != f"Bearer {self.key}":
                    seen.status = 401
                    return _error(401, "Incorrect API key provided.", "invalid_api_key")
                if number in self.faults:
                    seen.status = self.faults[number]
                    headers = {"retry-after-ms": str(self.retry_after_ms)}
                    return _error(seen.status, f"injected fault {seen.status}", None, headers)
                return JSONResponse(_completion(body, prompt))
            finally:
                self.in_flight -= 1

        return app


def _error(
    status: int, message: str, code: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _completion(body: dict[str, Any], prompt: str) -> dict[str, Any]:
    words = prompt.upper().split()
    finish = "stop"
    limit = body.get("max_tokens")
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    prompt_tokens = sum(len(str(m["content"]).split()) for m in body["messages"])
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        },
    }


async def _serve(port: int, key: str) -> None:
    async with FakeOpenAI(key=key, port=port, delay=0.0) as server:
        print(f"OpenAI-compatible endpoint at {server.base_url} (key {key!r}); Ctrl-C stops")
        await asyncio.Event().wait()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--key", default="local", help="the API key clients must send")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.key))


if __name__ == "__main__":
    main()
