"""``uses: llm``: chat completions for many prompts against any OpenAI-compatible endpoint.

Prompts come from ``prompts`` (a list) or a parquet artifact (``input`` + ``prompt_column`` or
``template``). Requests run ``concurrency`` at a time under the stage's rate limits and retry
policy (llm_call.py); answers land in ``responses/part_N.parquet`` and are checkpointed as they
accumulate (llm_ledger.py), so a retried stage pays only for prompts not yet answered. The key
is read from the environment variable ``api_key_env`` on the worker and never logged, so run
these stages on a queue whose workers hold the key (e.g. ``queue: openai``).

Outputs: ``responses`` (a dataset ref: id, prompt, response, finish_reason, prompt_tokens,
completion_tokens), ``rows``, ``requests`` and ``retries`` (HTTP requests made, over every
attempt), ``usage`` ({prompt_tokens, completion_tokens, total_tokens}) and, given ``price``,
``cost``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.http_retry import read_secret
from stageflow.executors.llm_call import ChatCaller, ChatSettings, Completion
from stageflow.executors.llm_ledger import Ledger
from stageflow.executors.llm_prompts import Prompt, load_prompts, template_columns
from stageflow.spec.model import Seconds
from stageflow.worker.context import StageContext

__all__ = ["LlmExecutor"]


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_per_1m: float = Field(ge=0, description="Price of a million prompt tokens.")
    output_per_1m: float = Field(ge=0, description="Price of a million completion tokens.")


class LlmParams(ExecutorParams):
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible API root.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Env var holding the API key.")
    model: str = Field(min_length=1, description="Model name as the endpoint knows it.")
    system: str | None = Field(None, description="System message sent with every prompt.")
    prompts: list[str] | None = Field(None, description="The prompts, as a list.")
    input: str | None = Field(None, description="Parquet artifact with one prompt per row.")
    prompt_column: str | None = Field(None, description="Column holding the prompt text.")
    template: str | None = Field(None, description='Prompt built from columns: "…{col}…".')
    id_column: str | None = Field(None, description="Column copied to `id` (default: row no.).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens per answer.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    concurrency: int = Field(4, ge=1, le=512, description="Requests in flight at once.")
    requests_per_minute: float | None = Field(None, gt=0, description="Request rate limit.")
    tokens_per_minute: float | None = Field(None, gt=0, description="Token rate limit.")
    max_retries: int = Field(6, ge=0, le=50, description="Retries per prompt (429/5xx/network).")
    backoff: Seconds = Field(1.0, gt=0, description="First wait between retries (doubles).")
    backoff_max: Seconds = Field(60.0, gt=0, description="Longest wait between retries.")
    request_timeout: Seconds = Field(120.0, gt=0, description="Timeout of one request.")
    price: Price | None = Field(None, description="Prices per million tokens, for `cost`.")
    checkpoint_every: int = Field(100, ge=1, description="Answers per checkpointed part.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.prompts is None) == (self.input is None):
            raise ValueError("give either `prompts` (a list) or `input` (a parquet artifact)")
        if self.prompts is not None and (self.prompt_column or self.template or self.id_column):
            raise ValueError("prompt_column, template and id_column go with `input`, not prompts")
        if self.input is not None:
            if bool(self.prompt_column) == bool(self.template):
                raise ValueError("with `input`, give exactly one of prompt_column or template")
            if self.template is not None and not template_columns(self.template):
                raise ValueError("template names no column: write e.g. 'Summarise: {text}'")
        return self


class LlmExecutor(Executor):
    name = "llm"
    Params = LlmParams

    async def run(self, params: LlmParams, ctx: StageContext) -> dict[str, Any]:
        key = read_secret(params.api_key_env, "llm")
        prompts = await asyncio.to_thread(
            load_prompts,
            prompts=params.prompts,
            input_path=params.input,
            prompt_column=params.prompt_column,
            template=params.template,
            id_column=params.id_column,
        )
        ledger = Ledger(ctx.output_dir() / "responses", ctx)
        done = await ledger.restore()
        todo = [p for p in prompts if p.index not in done]
        caller = ChatCaller(_settings(params, key))
        try:
            await _answer_all(todo, caller, ledger, ctx, params, total=len(prompts))
        finally:
            await caller.close()
        id_type = pa.string() if params.id_column else pa.int64()
        responses = await ledger.finish(id_type)
        prompt_tokens, completion_tokens = ledger.usage()
        outputs: dict[str, Any] = {
            "responses": responses,
            "rows": ledger.rows,
            "requests": ledger.requests + caller.requests,
            "retries": ledger.retries + caller.retries,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if params.price is not None:
            cost = (
                prompt_tokens * params.price.input_per_1m
                + completion_tokens * params.price.output_per_1m
            ) / 1e6
            outputs["cost"] = round(cost, 6)
        return outputs


def _settings(params: LlmParams, key: str) -> ChatSettings:
    return ChatSettings(
        base_url=params.base_url,
        api_key=key,
        key_env=params.api_key_env,
        model=params.model,
        system=params.system,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        request_timeout=params.request_timeout,
        max_retries=params.max_retries,
        backoff_initial=params.backoff,
        backoff_max=params.backoff_max,
        requests_per_minute=params.requests_per_minute,
        tokens_per_minute=params.tokens_per_minute,
    )


async def _answer_all(
    todo: list[Prompt],
    caller: ChatCaller,
    ledger: Ledger,
    ctx: StageContext,
    params: LlmParams,
    *,
    total: int,
) -> None:
    """Run ``concurrency`` workers over ``todo``; whatever happens, checkpoint what was answered.

    The first failure stops the other workers, the answers gathered so far are flushed as a
    part, and the failure is raised as it was (so its retryability decides what comes next).
    """
    pending = iter(todo)
    buffer: list[Completion] = []
    answered = total - len(todo)
    ctx.progress(answered, total, "prompts")

    async def work() -> None:
        nonlocal answered
        for prompt in pending:  # one shared iterator: each prompt is taken by one worker
            buffer.append(await caller.complete(prompt))
            answered += 1
            ctx.progress(answered, total, "prompts")
            if len(buffer) >= params.checkpoint_every:
                batch = buffer[:]
                buffer.clear()
                await asyncio.shield(ledger.flush(batch, caller.requests, caller.retries))

    workers = [asyncio.create_task(work()) for _ in range(min(params.concurrency, len(todo)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        batch = buffer[:]
        buffer.clear()
        await asyncio.shield(ledger.flush(batch, caller.requests, caller.retries))
