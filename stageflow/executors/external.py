"""``uses: external``: hand a job to an outside service and wait for it to call back.

For services that run elsewhere and take their time (a model pod, a batch system): the stage
registers a callback with the data server, POSTs the job to ``url`` with a ``callback_url`` in
the body, then waits until the service POSTs its result (any JSON, up to 64 KiB) to that URL.
The result becomes the stage's ``result`` output. Nothing of ours runs on the service's side
and it needs no token: the callback URL carries an unguessable id (stageflow/transfer/callbacks.py).

Retries are idempotent. The callback id and whether the job was accepted are checkpointed, so
a retried attempt (after a lost worker, say) waits on the same callback instead of dispatching
the job again; a job dispatched but not yet recorded as accepted is sent again with the same
``callback_url`` and ``Idempotency-Key``, which lets the service recognise the repeat. Only a
callback that expired (``timeout`` passed) or was lost by the data server leads to a fresh
dispatch.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
from pydantic import Field, field_validator

from stageflow.errors import AuthError, ConfigError, StageError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.http_retry import json_bytes, post_json
from stageflow.spec.model import Seconds
from stageflow.transfer.callbacks import MAX_CALLBACK_TIMEOUT
from stageflow.worker.context import StageContext

__all__ = ["CallbackTimeout", "ExternalExecutor"]

_LONG_POLL = 2.0
"""Seconds one ``GET /v1/callbacks/<id>?wait=`` may hang: short, so progress is reported and
a data server shutting down (it lets open requests finish) is not held up long."""


class CallbackTimeout(StageError, TimeoutError):
    """The outside service did not call back in time (retryable: a retry dispatches again)."""


class ExternalParams(ExecutorParams):
    url: str = Field(description="The outside service's endpoint that accepts jobs (POST).")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="The job: a JSON object (may use ${...})."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    secret_env: str | None = Field(
        None, description="Environment variable holding an HMAC secret to sign the job with."
    )
    timeout: Seconds = Field(
        3600.0, gt=0, le=MAX_CALLBACK_TIMEOUT, description="How long to wait for the callback."
    )
    request_timeout: Seconds = Field(30.0, gt=0, description="Timeout of the dispatch POST.")
    retries: int = Field(3, ge=0, le=20, description="Dispatch retries on 429/5xx/network.")
    backoff: Seconds = Field(1.0, gt=0, description="First wait between dispatch retries.")
    callback_base: str | None = Field(
        None,
        description="The data server's URL as the outside service reaches it "
        "(default: the worker's STAGEFLOW_DATA_SERVER_URL).",
    )

    @field_validator("url", "callback_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r:.80} must start with http:// or https://")
        return value


class ExternalExecutor(Executor):
    name = "external"
    Params = ExternalParams

    async def run(self, params: ExternalParams, ctx: StageContext) -> dict[str, Any]:
        if not ctx.server_url:
            raise ConfigError(
                "`external` stages need a data server to receive callbacks: start "
                "`stageflow server` and set STAGEFLOW_DATA_SERVER_URL on the workers"
            )
        started = time.monotonic()
        auth = {"Authorization": f"Bearer {ctx.data_plane.token}"}
        async with httpx.AsyncClient(
            base_url=ctx.server_url, headers=auth, timeout=_LONG_POLL + 10, trust_env=False
        ) as api:
            state = await _resumable(api, ctx)
            if state is None:
                state = await _register(api, params, ctx)
            if not state["dispatched"]:
                state = await _dispatch(params, ctx, state)
            result = await _wait(api, state, params, ctx)
        return {
            "result": result,
            "dispatch_status": state.get("dispatch_status"),
            "waited_s": round(time.monotonic() - started, 3),
        }


async def _resumable(api: httpx.AsyncClient, ctx: StageContext) -> dict[str, Any] | None:
    """The previous attempt's callback when it can still complete, else None."""
    state = ctx.resume_state()
    if not (isinstance(state, dict) and isinstance(state.get("callback"), str)):
        return None
    response = await _get(api, state["callback"], wait=0)
    if response is None or response.get("state") == "expired":
        ctx.logger.warning("the previous attempt's callback is gone or expired: dispatching again")
        return None
    ctx.logger.info("resuming: waiting on the callback registered by an earlier attempt")
    return state


async def _register(
    api: httpx.AsyncClient, params: ExternalParams, ctx: StageContext
) -> dict[str, Any]:
    response = await api.post(
        "/v1/callbacks",
        json={
            "timeout": params.timeout,
            "run_id": ctx.run_id,
            "pipeline": ctx.pipeline,
            "stage": ctx.name,
        },
    )
    _raise_for_server(response, "registering a callback")
    doc = response.json()
    state = {"callback": doc["id"], "expires_at": doc["expires_at"], "dispatched": False}
    ctx.checkpoint(state)
    return state


async def _dispatch(
    params: ExternalParams, ctx: StageContext, state: dict[str, Any]
) -> dict[str, Any]:
    base = (params.callback_base or ctx.server_url or "").rstrip("/")
    body = json_bytes(
        {
            **params.payload,
            "callback_url": f"{base}/v1/callbacks/{state['callback']}",
            "stageflow": {"run_id": ctx.run_id, "pipeline": ctx.pipeline, "stage": ctx.name},
        }
    )
    headers = {
        **params.headers,
        "Idempotency-Key": hashlib.sha256(state["callback"].encode()).hexdigest()[:32],
    }
    response, _ = await post_json(
        params.url,
        body,
        headers=headers,
        timeout=params.request_timeout,
        retries=params.retries,
        initial=params.backoff,
        what="job dispatch",
        secret_env=params.secret_env,
    )
    state = {**state, "dispatched": True, "dispatch_status": response.status_code}
    ctx.checkpoint(state)
    return state


async def _wait(
    api: httpx.AsyncClient, state: dict[str, Any], params: ExternalParams, ctx: StageContext
) -> Any:
    """Long-poll the data server until the callback lands or expires.

    A data server that is restarting is waited for (its records are on disk); heartbeats keep
    flowing meanwhile, since the activity heartbeats on its own and this loop never blocks.
    """
    expires_at = float(state["expires_at"])
    total = max(params.timeout, 1.0)
    while True:
        remaining = expires_at - time.time()
        try:
            view = await _get(api, state["callback"], wait=min(_LONG_POLL, max(remaining, 0.0)))
        except httpx.TransportError as exc:
            ctx.logger.warning("data server unreachable while waiting for the callback: %s", exc)
            view = {"state": "unavailable"}
        if view is None:
            raise StageError(
                "the data server no longer knows this stage's callback (was its directory "
                "wiped?); a retry registers a new one and dispatches the job again"
            )
        if view["state"] == "done":
            return view.get("result")
        if view["state"] == "expired" or time.time() >= expires_at:
            raise CallbackTimeout(
                f"{params.url} did not call back within {params.timeout:g} s; raise `timeout` "
                "if the job needs longer, or check the service's logs for the job"
            )
        if view["state"] == "unavailable":  # restarting: its records are on disk, wait for it
            await asyncio.sleep(min(1.0, max(remaining, 0.05)))
        ctx.progress(min(total, total - remaining), total, "seconds waited")


async def _get(api: httpx.AsyncClient, callback_id: str, *, wait: float) -> dict[str, Any] | None:
    response = await api.get(f"/v1/callbacks/{callback_id}", params={"wait": f"{wait:.3f}"})
    if response.status_code == 404:
        return None
    if response.status_code >= 500:
        return {"state": "unavailable"}
    _raise_for_server(response, "reading the callback")
    return response.json()  # type: ignore[no-any-return]


def _raise_for_server(response: httpx.Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise AuthError(f"{what}: the data server refused the deployment token: check it")
    if response.status_code >= 400:
        raise StageError(f"{what}: data server answered {response.status_code}: {response.text}")
