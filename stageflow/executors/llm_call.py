"""One chat completion at a time, under our limits and retry policy (the ``llm`` executor's core).

The official ``openai`` client speaks the wire protocol; it is created with ``max_retries=0``
so that retries follow stageflow's policy (stageflow/executors/http_retry.py): 408/409/429/5xx
and connection errors are retried with jittered exponential backoff, honouring the server's
``retry-after-ms``/``Retry-After``; any other 4xx (a bad key, a bad model name) fails the stage
at once with the server's own message.

Limits are shared by every concurrent request of the stage: ``requests_per_minute`` spaces
requests evenly (no bursts: providers often enforce per-minute limits over shorter windows),
and ``tokens_per_minute`` books each request's estimated tokens (prompt characters / 4 plus
``max_tokens``) before it is sent and the shortfall once the real usage is known. Every try
is booked, retries included, since the provider counts them too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from stageflow.errors import ConfigError
from stageflow.executors.http_retry import HttpCallError, is_retryable_status, retry_delay
from stageflow.executors.llm_prompts import Prompt
from stageflow.transfer.ratelimit import RateLimiter

__all__ = ["ChatCaller", "ChatSettings", "Completion"]


@dataclass(frozen=True)
class ChatSettings:
    base_url: str
    api_key: str
    key_env: str
    model: str
    system: str | None
    max_tokens: int | None
    temperature: float | None
    request_timeout: float
    max_retries: int
    backoff_initial: float
    backoff_max: float
    requests_per_minute: float | None
    tokens_per_minute: float | None


@dataclass(frozen=True)
class Completion:
    prompt: Prompt
    response: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise ConfigError(
            "the llm executor needs the openai client on this worker: pip install 'stageflow[llm]'"
        ) from None
    return openai


class ChatCaller:
    """Sends completions for one stage; counts the requests and retries it made."""

    def __init__(self, settings: ChatSettings) -> None:
        self.settings = settings
        self._openai = _openai()
        self.client = self._openai.AsyncOpenAI(
            api_key=settings.api_key,
            base_url=settings.base_url,
            max_retries=0,
            timeout=settings.request_timeout,
        )
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        self._requests = RateLimiter(rpm / 60, burst=0.0) if rpm else None
        self._tokens = RateLimiter(tpm / 60, burst=1.0) if tpm else None
        self.requests = 0
        self.retries = 0

    async def close(self) -> None:
        await self.client.close()

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt.text}]
        if self.settings.system:
            messages.insert(0, {"role": "system", "content": self.settings.system})
        return messages

    def _estimate(self, prompt: Prompt) -> int:
        chars = len(prompt.text) + len(self.settings.system or "")
        return chars // 4 + 1 + (self.settings.max_tokens or 0)

    async def complete(self, prompt: Prompt) -> Completion:
        """The completion of ``prompt``, retried as the module docstring says."""
        s = self.settings
        options: dict[str, Any] = {}
        if s.max_tokens is not None:
            options["max_tokens"] = s.max_tokens
        if s.temperature is not None:
            options["temperature"] = s.temperature
        estimate = self._estimate(prompt)
        for attempt in range(1, s.max_retries + 2):
            if self._requests is not None:
                await self._requests.acquire(1)
            if self._tokens is not None:
                await self._tokens.acquire(estimate)
            self.requests += 1
            headers = None
            try:
                reply = await self.client.chat.completions.create(
                    model=s.model, messages=self._messages(prompt), **options
                )
            except self._openai.APIStatusError as exc:
                if not is_retryable_status(exc.status_code):
                    raise self._rejected(exc) from None
                failure = f"HTTP {exc.status_code}: {_server_message(exc)}"
                headers = exc.response.headers
            except self._openai.APIConnectionError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                return await self._completion(prompt, reply, estimate)
            if attempt > s.max_retries:
                raise HttpCallError(
                    f"llm: {s.base_url} kept failing for prompt {prompt.index} after "
                    f"{attempt} tries (last: {failure}); completed prompts are checkpointed, so "
                    "a retry of the stage continues from here",
                    retryable=True,
                )
            self.retries += 1
            delay = retry_delay(
                attempt, initial=s.backoff_initial, maximum=s.backoff_max, headers=headers
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _completion(self, prompt: Prompt, reply: Any, estimate: int) -> Completion:
        choice = reply.choices[0] if reply.choices else None
        usage = reply.usage
        prompt_tokens = int(usage.prompt_tokens) if usage else 0
        completion_tokens = int(usage.completion_tokens) if usage else 0
        if self._tokens is not None and prompt_tokens + completion_tokens > estimate:
            await self._tokens.acquire(prompt_tokens + completion_tokens - estimate)
        return Completion(
            prompt=prompt,
            response=(choice.message.content or "") if choice else "",
            finish_reason=choice.finish_reason if choice else None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def _rejected(self, exc: Any) -> HttpCallError:
        s = self.settings
        hint = (
            f"check the key in ${s.key_env}"
            if exc.status_code in (401, 403)
            else "fix the stage's parameters (model, max_tokens, ...)"
        )
        return HttpCallError(
            f"llm: {s.base_url} rejected the request with HTTP {exc.status_code}: "
            f"{_server_message(exc)}; {hint} (not retried)",
            status=exc.status_code,
            retryable=False,
        )


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    return str(getattr(exc, "message", exc))[:500]
